import BanditoreChannels
import BanditoreCore
import BanditoreRuntime
import Configuration

/// The `banditore-composer` executable: the runtime (broker, database, health and metrics) plus the ``Composer``.
///
/// Its settings, with their environment variables and defaults, are tabled in the README (which
/// `scripts/check-config` holds to the `reader` calls here).
public enum ComposerService {
    public static let defaultPort = 8082

    public static func run() async throws {
        try await ServiceRunner.run(
            ServiceDescription(
                name: "banditore-composer", defaultPort: defaultPort, queues: BanditoreTopology.composerQueues
            )
        ) { context in
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
        let channelPosts: [ChannelPost]
        do {
            channelPosts = try ChannelPost.parse(reader.string(forKey: "telegram.channelPosts", default: ""))
        } catch {
            throw ServiceSetupError("TELEGRAM_CHANNEL_POSTS: \(error)")
        }
        let composer = Composer(
            configuration: .init(
                hours: hours,
                templates: BulletinTemplates(reader: reader),
                chunk: reader.int(forKey: "composer.chunk", default: 500),
                checkpoint: reader.int(forKey: "composer.checkpoint", default: 10_000),
                pollInterval: .milliseconds(Int(reader.double(forKey: "composer.pollSeconds", default: 1) * 1000)),
                channelPosts: channelPosts
            ),
            amqp: amqp, database: database, logger: context.logger
        )
        return ServiceParts(services: [composer])
    }
}
