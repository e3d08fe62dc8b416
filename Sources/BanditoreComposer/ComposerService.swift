import BanditoreChannels
import BanditoreCore
import BanditoreRuntime
import Configuration

/// The `banditore-composer` executable: the runtime (broker, database, health and metrics) plus the ``Composer``.
///
/// | key (environment variable) | type | default | |
/// |---|---|---|---|
/// | `serviceHours.windows` (`SERVICE_HOURS_WINDOWS`) | string | `mon-fri 09:00-13:00,15:00-18:00; sat 09:00-12:00` | |
/// | `serviceHours.timeZone` (`SERVICE_HOURS_TIME_ZONE`) | string | `Europe/Rome` | |
/// | `composer.chunk` (`COMPOSER_CHUNK`) | int | 500 | recipients per delivery job |
/// | `composer.checkpoint` (`COMPOSER_CHECKPOINT`) | int | 10000 | deliveries between confirmed checkpoints |
/// | `composer.pollSeconds` (`COMPOSER_POLL_SECONDS`) | double | 1 | how often scheduled bulletins are looked for |
/// | `whatsapp.bulletinTemplate` (`WHATSAPP_BULLETIN_TEMPLATE`) | string | `banditore_bulletin` | |
/// | `wechat.bulletinTemplateId` (`WECHAT_BULLETIN_TEMPLATE_ID`) | string | `banditore-bulletin` | |
public enum ComposerService {
    public static let defaultPort = 8082

    public static func run() async throws {
        try await ServiceRunner.run(ServiceDescription(name: "banditore-composer", defaultPort: defaultPort)) {
            context in
            try makeParts(context: context)
        }
    }

    public static func makeParts(context: ServiceContext) throws -> ServiceParts {
        guard let amqp = context.amqp, let database = context.database else {
            throw ServiceSetupError("the composer needs the broker and the database")
        }
        let reader = context.reader
        let hours: ServiceHours
        do {
            hours = try ServiceHours(
                reader.string(forKey: "serviceHours.windows", default: ServiceHours.defaultSpecification),
                timeZone: reader.string(forKey: "serviceHours.timeZone", default: "Europe/Rome")
            )
        } catch {
            throw ServiceSetupError("SERVICE_HOURS_WINDOWS / SERVICE_HOURS_TIME_ZONE: \(error)")
        }
        let composer = Composer(
            configuration: .init(
                hours: hours,
                templates: BulletinTemplates(
                    whatsappName: reader.string(forKey: "whatsapp.bulletinTemplate", default: "banditore_bulletin"),
                    wechatID: reader.string(forKey: "wechat.bulletinTemplateId", default: "banditore-bulletin")
                ),
                chunk: reader.int(forKey: "composer.chunk", default: 500),
                checkpoint: reader.int(forKey: "composer.checkpoint", default: 10_000),
                pollInterval: .milliseconds(Int(reader.double(forKey: "composer.pollSeconds", default: 1) * 1000))
            ),
            amqp: amqp, database: database, logger: context.logger
        )
        return ServiceParts(services: [composer])
    }
}
