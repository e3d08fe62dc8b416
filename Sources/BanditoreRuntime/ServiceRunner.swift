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
    /// False when the service answers HTTP itself (on `HTTP_HOST`/`HTTP_PORT`, with its own `/healthz`,
    /// `/readyz` and `/metrics`) instead of through the runtime's Hummingbird server.
    public var runtimeHTTP: Bool
    /// Queues whose ready messages and consumers `/metrics` reports (`banditore_queue_messages`,
    /// `banditore_queue_consumers`), read from the broker every 5 s.
    public var queues: [String]

    public init(
        name: String, defaultPort: Int, usesBroker: Bool = true, usesDatabase: Bool = true, runtimeHTTP: Bool = true,
        queues: [String] = []
    ) {
        self.name = name
        self.defaultPort = defaultPort
        self.usesBroker = usesBroker
        self.usesDatabase = usesDatabase
        self.runtimeHTTP = runtimeHTTP
        self.queues = queues
    }
}

/// The connections a service gets from the runtime, for its own components.
public struct ServiceContext: Sendable {
    public let configuration: RuntimeConfiguration
    /// Flags, then environment variables: for the service's own settings.
    public let reader: ConfigReader
    public let logger: Logger
    public let amqp: AMQPConnection?
    public let database: DatabasePool?
    public let metrics: PrometheusCollectorRegistry
}

/// A service's own parts: long-lived components and HTTP routes.
public struct ServiceParts: Sendable {
    public var services: [any Service]
    public var routes: @Sendable (Router<BasicRequestContext>) -> Void

    public init(
        services: [any Service] = [], routes: @escaping @Sendable (Router<BasicRequestContext>) -> Void = { _ in }
    ) {
        self.services = services
        self.routes = routes
    }
}

/// Starts a Banditore service: logging and metrics, the broker connection (retried with backoff until the broker
/// answers) with the topology declared, the database pool (with migrations when asked), the HTTP server with
/// `/healthz`, `/readyz` and `/metrics`, and the service's own components, all in one ServiceGroup that shuts
/// down gracefully on SIGTERM or SIGINT.
public enum ServiceRunner {
    public static func run(
        _ description: ServiceDescription,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        arguments: [String] = CommandLine.arguments,
        setup: @Sendable (ServiceContext) async throws -> ServiceParts = { _ in ServiceParts() }
    ) async throws {
        let reader = ConfigReader(providers: [
            CommandLineArgumentsProvider(arguments: arguments),
            EnvironmentVariablesProvider(environmentVariables: environment),
        ])
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

        do {
            let group = try await makeServiceGroup(
                description, configuration: configuration, reader: reader, logger: logger, registry: registry,
                setup: setup
            )
            try await group.run()
        } catch {
            // What stopped it, as a log line and exit status 1: not a crash report.
            // The broker's reply (which queue, which argument) is in an AMQPError's debug description.
            let detail = (error as? AMQPError)?.debugDescription ?? "\(error)"
            logger.critical("\(description.name) stopped on an error", metadata: ["error": "\(detail)"])
            exit(1)
        }
        logger.info("stopped")
    }

    /// Builds the group without bootstrapping globals (for tests).
    public static func makeServiceGroup(
        _ description: ServiceDescription,
        configuration: RuntimeConfiguration,
        reader: ConfigReader,
        logger: Logger,
        registry: PrometheusCollectorRegistry,
        setup: @Sendable (ServiceContext) async throws -> ServiceParts = { _ in ServiceParts() }
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
        var database: DatabasePool?
        if description.usesDatabase {
            let client = DatabasePool(
                configuration: try DatabaseConfiguration(
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
            configuration: configuration, reader: reader, logger: logger, amqp: amqp, database: database,
            metrics: registry
        )
        let parts = try await setup(context)
        services += parts.services
        if let amqp, !description.queues.isEmpty {
            var sampling = amqp.configuration
            sampling.connectionName = "\(description.name) (queue depth)"
            services.append(QueueDepthSampler(configuration: sampling, queues: description.queues, logger: logger))
        }

        if description.runtimeHTTP {
            let router = Router()
            HealthRoutes.add(to: router, context: context)
            parts.routes(router)
            let app = Application(
                router: router,
                configuration: ApplicationConfiguration(
                    address: .hostname(configuration.httpHost, port: configuration.httpPort),
                    serverName: description.name
                ),
                logger: logger
            )
            services.append(app)
        }
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

    private static func waitForDatabase(_ client: DatabasePool, logger: Logger) async throws {
        try await retryWhileUnreachable("database", logger: logger) {
            do {
                try await client.query("SELECT 1")
            } catch let error as DatabaseError where error.code == .connectionFailed {
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
