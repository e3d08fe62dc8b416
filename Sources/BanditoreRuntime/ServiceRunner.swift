import BanditoreAMQP
import BanditorePostgres
import BanditoreStore
import Configuration
import Foundation
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

/// What a service needs from the shared runtime.
public struct ServiceDescription: Sendable {
    public var name: String
    public var defaultPort: Int
    public var usesBroker: Bool
    public var usesDatabase: Bool

    public init(name: String, defaultPort: Int, usesBroker: Bool = true, usesDatabase: Bool = true) {
        self.name = name
        self.defaultPort = defaultPort
        self.usesBroker = usesBroker
        self.usesDatabase = usesDatabase
    }
}

/// The connections a service gets from the runtime, for its own components.
public struct ServiceContext: Sendable {
    public let configuration: RuntimeConfiguration
    public let logger: Logger
    public let amqp: AMQPConnection?
    public let database: PostgresClient?
    public let metrics: PrometheusCollectorRegistry
}

/// Starts a Banditore service: logging and metrics, the broker connection (retried with backoff until the broker
/// answers) with the topology declared, the database pool (with migrations when asked), the HTTP server with
/// `/healthz`, `/readyz` and `/metrics`, and the service's own components, all in one ServiceGroup that shuts
/// down gracefully on SIGTERM or SIGINT.
public enum ServiceRunner {
    public static func run(
        _ description: ServiceDescription,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        components: @Sendable (ServiceContext) async throws -> [any Service] = { _ in [] },
        routes: @Sendable (Router<BasicRequestContext>, ServiceContext) -> Void = { _, _ in }
    ) async throws {
        let reader = ConfigReader(provider: EnvironmentVariablesProvider(environmentVariables: environment))
        let configuration = RuntimeConfiguration(reader: reader, defaultPort: description.defaultPort)
        let level = configuration.logLevel
        let json = configuration.jsonLogs
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler =
                json
                ? JSONLogHandler(label: label, service: description.name)
                : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = Logger(label: description.name)

        let group = try await makeServiceGroup(
            description, configuration: configuration, logger: logger, registry: registry, components: components,
            routes: routes
        )
        try await group.run()
        logger.info("stopped")
    }

    /// Builds the group without bootstrapping globals (for tests).
    public static func makeServiceGroup(
        _ description: ServiceDescription,
        configuration: RuntimeConfiguration,
        logger: Logger,
        registry: PrometheusCollectorRegistry,
        components: @Sendable (ServiceContext) async throws -> [any Service] = { _ in [] },
        routes: @Sendable (Router<BasicRequestContext>, ServiceContext) -> Void = { _, _ in }
    ) async throws -> ServiceGroup {
        var services: [any Service] = []
        var amqp: AMQPConnection?
        if description.usesBroker {
            var amqpConfiguration = try AMQPConfiguration(url: configuration.amqpURL)
            amqpConfiguration.connectionName = description.name
            let connection = try await connectWithRetry(amqpConfiguration, logger: logger)
            try await connection.declare(BanditoreTopology.all)
            logger.info("AMQP topology declared")
            amqp = connection
            services.append(connection)
        }
        var database: PostgresClient?
        if description.usesDatabase {
            let client = PostgresClient(
                configuration: try PostgresConfiguration(
                    url: configuration.databaseURL, maxConnections: configuration.databaseMaxConnections,
                    applicationName: description.name
                ),
                logger: logger
            )
            try await waitForDatabase(client, logger: logger)
            if configuration.migrateOnStart {
                let applied = try await Migrator(logger: logger).migrate(client)
                logger.info("migrations applied", metadata: ["migrations": "\(applied)"])
            }
            database = client
            services.append(client)
        }
        let context = ServiceContext(
            configuration: configuration, logger: logger, amqp: amqp, database: database, metrics: registry
        )
        services += try await components(context)

        let router = Router()
        HealthRoutes.add(to: router, context: context)
        routes(router, context)
        let app = Application(
            router: router,
            configuration: ApplicationConfiguration(
                address: .hostname(configuration.httpHost, port: configuration.httpPort),
                serverName: description.name
            ),
            logger: logger
        )
        services.append(app)
        logger.info(
            "starting",
            metadata: ["http.address": "\(configuration.httpHost):\(configuration.httpPort)"]
        )
        return ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services.map {
                    ServiceGroupConfiguration.ServiceConfiguration(
                        service: $0, successTerminationBehavior: .gracefullyShutdownGroup,
                        failureTerminationBehavior: .gracefullyShutdownGroup
                    )
                },
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [],
                logger: logger
            )
        )
    }

    /// Connects to the broker, retrying with backoff while it is not up yet (services may start before it).
    public static func connectWithRetry(_ configuration: AMQPConfiguration, logger: Logger) async throws
        -> AMQPConnection
    {
        try await retryWhileUnreachable("broker", logger: logger) {
            do {
                return try await AMQPConnection.connect(configuration, logger: logger)
            } catch let error as AMQPError where error.code == .connectionFailed {
                throw Unreachable(underlying: error)
            }
        }
    }

    private static func waitForDatabase(_ client: PostgresClient, logger: Logger) async throws {
        try await retryWhileUnreachable("database", logger: logger) {
            do {
                try await client.query("SELECT 1")
            } catch let error as PostgresError where error.code == .connectionFailed {
                throw Unreachable(underlying: error)
            }
        }
    }

    private struct Unreachable: Error {
        let underlying: any Error
    }

    /// Runs `attempt` until it does not throw ``Unreachable``, waiting 0.2 s, 0.4 s, … up to 5 s in between.
    private static func retryWhileUnreachable<T>(
        _ what: String,
        logger: Logger,
        _ attempt: () async throws -> T
    ) async throws -> T {
        var delay = 0.2
        while true {
            do {
                return try await attempt()
            } catch let error as Unreachable {
                logger.warning(
                    "\(what) not reachable yet; retrying",
                    metadata: ["error": "\(String(reflecting: error.underlying))", "retry.seconds": "\(delay)"]
                )
                try await Task.sleep(for: .milliseconds(Int(delay * 1000)))
                delay = min(delay * 2, 5)
            }
        }
    }
}
