import ArgumentParser
import BanditoreAMQP
import BanditorePostgres
import BanditoreRuntime
import BanditoreStore
import Logging

/// The operators' and admins' command line.
@main
struct Banditore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "banditore",
        abstract: "Operate Banditore: database migrations and the broker's topology.",
        subcommands: [Migrate.self, Topology.self]
    )
}

struct ConnectionOptions: ParsableArguments {
    @Option(help: "PostgreSQL URL (default: $DATABASE_URL, else the local development database).")
    var databaseURL: String?

    @Option(help: "RabbitMQ URL (default: $AMQP_URL, else the local development broker).")
    var amqpURL: String?

    var configuration: RuntimeConfiguration { RuntimeConfiguration.fromEnvironment(defaultPort: 0) }
    var resolvedDatabaseURL: String { databaseURL ?? configuration.databaseURL }
    var resolvedAMQPURL: String { amqpURL ?? configuration.amqpURL }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply the database migrations that are missing (safe to run again)."
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(help: "List the migrations and whether each is applied, without applying anything.")
    var status = false

    func run() async throws {
        let logger = Logger(label: "banditore.migrate")
        let client = try PostgresClient(url: connection.resolvedDatabaseURL, logger: logger)
        defer { Task { await client.close() } }
        let migrator = try Migrator(logger: logger)
        if status {
            let applied = (try? await migrator.applied(client)) ?? [:]
            for migration in migrator.migrations {
                let mark = applied[migration.version] == nil ? "pending" : "applied"
                print("\(migration.version)_\(migration.name)\t\(mark)")
            }
        } else {
            let versions = try await migrator.migrate(client)
            print(versions.isEmpty ? "database is up to date" : "applied: \(versions.map(String.init).joined(separator: ", "))")
        }
        await client.close()
    }
}

struct Topology: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Declare Banditore's exchanges, queues and bindings on the broker (safe to run again)."
    )

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let logger = Logger(label: "banditore.topology")
        let topology = BanditoreTopology.all
        try await AMQPConnection.withConnection(AMQPConfiguration(url: connection.resolvedAMQPURL), logger: logger) {
            try await $0.declare(topology)
        }
        print("declared \(topology.exchanges.count) exchanges, \(topology.queues.count) queues, "
            + "\(topology.bindings.count) bindings")
    }
}
