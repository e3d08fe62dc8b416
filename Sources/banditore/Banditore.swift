import ArgumentParser
import BanditoreAMQP
import BanditoreCore
import BanditorePostgres
import BanditoreRuntime
import BanditoreStore
import Foundation
import Logging

/// The operators' and admins' command line.
@main
struct Banditore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "banditore",
        abstract: "Operate Banditore: bulletins (through the admin API), database migrations, the broker's topology, "
            + "subscribers, dead letters.",
        subcommands: [
            Post.self, Status.self, Cancel.self, Topics.self, Migrate.self, Topology.self, Subscribers.self,
            DeadLetterCommands.self,
        ]
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
        let client = try DatabasePool(url: connection.resolvedDatabaseURL, logger: logger)
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
            print(
                versions.isEmpty
                    ? "database is up to date" : "applied: \(versions.map(String.init).joined(separator: ", "))")
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
        do {
            try await AMQPConnection.withConnection(AMQPConfiguration(url: connection.resolvedAMQPURL), logger: logger)
            {
                try await $0.declare(topology)
            }
        } catch let error as AMQPError {
            // The broker's reply names the queue and the argument that differs.
            var message = "error: \(error.debugDescription)\n"
            if error.debugDescription.contains("x-queue-type") {
                message +=
                    "a queue exists with another type than this version declares and is not empty or is "
                    + "consumed: see the README, \"Upgrading a broker\" under \"AMQP topology\"\n"
            }
            FileHandle.standardError.write(Data(message.utf8))
            throw ExitCode.failure
        }
        print(
            "declared \(topology.exchanges.count) exchanges, \(topology.queues.count) queues, "
                + "\(topology.bindings.count) bindings")
    }
}

extension Channel: ExpressibleByArgument {}

struct DeadLetterCommands: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead-letters",
        abstract: "List or replay a channel's dead letters (jobs whose attempts ran out, undecodable jobs).",
        subcommands: [List.self, Replay.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the dead letters of a channel; they stay in the queue.")

        @OptionGroup var connection: ConnectionOptions
        @Option(help: "whatsapp, telegram or wechat.") var channel: Channel
        @Option(help: "At most this many letters.") var limit = 1000

        func run() async throws {
            let logger = Logger(label: "banditore.dead-letters")
            let letters = try await DeadLetters.list(
                channel, amqpURL: connection.resolvedAMQPURL, limit: limit, logger: logger
            )
            var recipients = 0
            for letter in letters {
                guard let job = letter.job else {
                    print("\(letter.messageID ?? "-")\tundecodable (\(letter.bodyBytes) bytes)")
                    continue
                }
                recipients += job.recipients.count
                let bulletin = job.bulletinID.map { "bulletin \($0.uuidString.lowercased())" } ?? "reply"
                print(
                    "\(job.id)\t\(bulletin)\t\(job.recipients.count) recipients\tattempts \(job.attempt)\t\(job.lastError ?? "")"
                )
            }
            print("\(letters.count) dead letters on \(DeadLetters.queue(channel)), \(recipients) recipients")
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put a channel's dead letters back on its queue with their attempts reset."
        )

        @OptionGroup var connection: ConnectionOptions
        @Option(help: "whatsapp, telegram or wechat.") var channel: Channel
        @Option(help: "At most this many letters.") var limit = 100_000

        func run() async throws {
            let logger = Logger(label: "banditore.dead-letters")
            let database = try DatabasePool(url: connection.resolvedDatabaseURL, logger: logger)
            do {
                let report = try await DeadLetters.replay(
                    channel, amqpURL: connection.resolvedAMQPURL, database: database, limit: limit, logger: logger
                )
                print(
                    "replayed \(report.replayed) dead letters (\(report.recipients) recipients) to dispatch.\(channel.rawValue)"
                )
                if report.undecodable > 0 { print("left \(report.undecodable) undecodable letters in place") }
            } catch {
                await database.close()
                throw error
            }
            await database.close()
        }
    }
}

struct Subscribers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Count subscribers: active and inactive per channel, active per language and per topic."
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(help: "Print JSON (the shape of GET /v1/stats).")
    var json = false

    func run() async throws {
        let logger = Logger(label: "banditore.subscribers")
        let database = try DatabasePool(url: connection.resolvedDatabaseURL, logger: logger)
        let stats: SubscriberStats
        do {
            stats = try await SubscriberStats.load(database)
        } catch {
            await database.close()
            throw error
        }
        await database.close()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            print(String(decoding: try encoder.encode(stats), as: UTF8.self))
            return
        }
        func row(_ name: String, _ values: String...) -> String {
            name.padding(toLength: 20, withPad: " ", startingAt: 0)
                + values.map {
                    String(repeating: " ", count: max(0, 10 - $0.count)) + $0
                }.joined()
        }
        print(row("channel", "active", "inactive"))
        for channel in Channel.allCases {
            let counts = stats.byChannel[channel.rawValue] ?? .init(active: 0, inactive: 0)
            print(row(channel.rawValue, String(counts.active), String(counts.inactive)))
        }
        print(row("all", String(stats.active), String(stats.inactive)))
        print("")
        print(row("language", "active"))
        for language in Language.allCases {
            print(row(language.rawValue, String(stats.byLanguage[language.rawValue] ?? 0)))
        }
        print("")
        print(row("topic", "followers"))
        for (topic, count) in stats.byTopic.sorted(by: { $0.key < $1.key }) { print(row(topic, String(count))) }
    }
}
