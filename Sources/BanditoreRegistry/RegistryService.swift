import BanditoreRuntime
import Configuration

/// The `banditore-registry` executable: the runtime (broker, database, health and metrics) plus the ``Registry``
/// and the outbox relay that publishes its replies.
///
/// Its settings, with their environment variables and defaults, are tabled in the README (which
/// `scripts/check-config` holds to the `reader` calls here).
public enum RegistryService {
    public static let defaultPort = 8081

    public static func run() async throws {
        try await ServiceRunner.run(
            ServiceDescription(
                name: "banditore-registry", defaultPort: defaultPort, queues: BanditoreTopology.registryQueues
            )
        ) { context in
            try makeParts(context: context)
        }
    }

    public static func makeParts(context: ServiceContext) throws -> ServiceParts {
        guard let amqp = context.amqp, let database = context.database else {
            throw ServiceSetupError("the registry needs the broker and the database")
        }
        let reader = context.reader
        let sweep = reader.double(forKey: "outbox.sweepSeconds", default: 2)
        let relay = OutboxRelay(
            amqp: amqp, database: database, logger: context.logger,
            sweepInterval: .milliseconds(Int(sweep * 1000)),
            retention: .seconds(reader.double(forKey: "outbox.retentionHours", default: 168) * 3600)
        )
        let registry = Registry(
            configuration: .init(
                lanes: reader.int(forKey: "registry.lanes", default: 8),
                prefetch: reader.int(forKey: "registry.prefetch", default: 512),
                batch: reader.int(forKey: "registry.batch", default: 64),
                inboundRetention: .seconds(reader.double(forKey: "inbound.retentionDays", default: 8) * 24 * 3600)
            ),
            amqp: amqp, database: database, relay: relay, logger: context.logger
        )
        return ServiceParts(services: [relay, registry])
    }
}
