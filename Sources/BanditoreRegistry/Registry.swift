import BanditoreAMQP
import BanditoreCore
import BanditorePostgres
import BanditoreRuntime
import BanditoreStore
import Foundation
import Logging
import Metrics
import ServiceLifecycle

/// Consumes `registry.commands` (citizens' commands from ingest) and `registry.events` (`recipient.unreachable`
/// from the dispatchers) and applies them to PostgreSQL.
///
/// Commands run in `lanes` concurrent lanes; a citizen's commands always take the same lane (by address), so they
/// apply in the order they were sent. A lane takes every command waiting for it (up to `batch`) and applies them
/// in one transaction, each command's effect with its reply (an outbox row): what each command reads first (its
/// provider message id recorded, its citizen's row locked) is read ahead for the whole batch in two statements, and
/// the replies are written in one (``CommandHandler/apply(batch:on:)``); after the commit the replies are
/// published as delivery jobs of one recipient, all in flight at once, and the commands acknowledged. When a
/// batch's transaction fails, its commands are applied again one transaction each, so that one bad command holds
/// up no other. A command that cannot be decoded goes to the dead-letter queue; a database failure puts it back
/// after a pause.
public final class Registry: Service, Sendable {
    public struct Configuration: Sendable {
        public var lanes: Int
        public var prefetch: Int
        /// The most commands a lane applies in one transaction.
        public var batch: Int
        /// How long the providers' message ids are kept to recognise their retries (``InboundMessages``).
        public var inboundRetention: Duration

        public init(
            lanes: Int = 8, prefetch: Int = 512, batch: Int = 64, inboundRetention: Duration = .seconds(8 * 24 * 3600)
        ) {
            self.lanes = max(1, lanes)
            self.prefetch = max(self.lanes, prefetch)
            self.batch = max(1, batch)
            self.inboundRetention = inboundRetention
        }
    }

    private let configuration: Configuration
    private let amqp: AMQPConnection
    private let database: DatabasePool
    private let relay: OutboxRelay
    private let handler: CommandHandler
    private let logger: Logger
    private let commands = Counter(label: "banditore_registry_commands_total")
    private let duplicates = Counter(label: "banditore_registry_duplicates_total")
    private let replies = Counter(label: "banditore_registry_replies_total")
    private let deactivated = Counter(label: "banditore_registry_deactivated_total")
    private let poison = Counter(label: "banditore_registry_poison_total")
    private let failures = Counter(label: "banditore_registry_failures_total")
    private let transactions = Counter(label: "banditore_registry_transactions_total")

    public init(
        configuration: Configuration, amqp: AMQPConnection, database: DatabasePool, relay: OutboxRelay,
        logger: Logger
    ) {
        self.configuration = configuration
        self.amqp = amqp
        self.database = database
        self.relay = relay
        self.handler = CommandHandler(topics: TopicCatalogue())
        self.logger = logger
    }

    public func run() async throws {
        let commandConsumer = try await amqp.consume(
            queue: BanditoreTopology.registryCommands, prefetch: UInt16(clamping: configuration.prefetch)
        )
        let eventConsumer = try await amqp.consume(queue: BanditoreTopology.registryEvents, prefetch: 32)
        logger.info("registry consuming", metadata: ["lanes": "\(configuration.lanes)"])
        let lanes = (0..<configuration.lanes).map { _ in LaneQueue<AMQPDelivery>() }
        let batch = configuration.batch
        await withTaskGroup { group in
            for lane in lanes {
                group.addTask {
                    while let deliveries = await lane.take(limit: batch) { await self.handleCommands(deliveries) }
                }
            }
            group.addTask {
                do {
                    for try await delivery in eventConsumer { await self.handleEvent(delivery) }
                } catch {
                    self.logger.error("event consumer ended", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
            group.addTask { await self.maintain() }
            group.addTask {
                try? await gracefulShutdown()
                commandConsumer.cancel()
                eventConsumer.cancel()
            }
            do {
                for try await delivery in commandConsumer {
                    lanes[Self.lane(of: delivery, count: lanes.count)].push(delivery)
                }
            } catch {
                logger.error("command consumer ended", metadata: ["error": "\(String(reflecting: error))"])
            }
            for lane in lanes { lane.finish() }
            eventConsumer.cancel()
            await group.waitForAll()
        }
        logger.info("registry stopped")
    }

    /// Every 30 s: applies providers' reports that came before their send was recorded, forgets old ones; every
    /// 10 minutes: forgets the providers' message ids older than `inboundRetention`.
    private func maintain() async {
        await cancelWhenGracefulShutdown {
            var round = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(30))
                round += 1
                do {
                    try await self.database.withConnection { connection in
                        try await DeliveryReports.applyKeptRecent(on: connection)
                        try await DeliveryReports.prune(on: connection)
                    }
                } catch {
                    self.logger.warning("report sweep failed", metadata: ["error": "\(String(reflecting: error))"])
                }
                guard round % 20 == 1 else { continue }
                do {
                    let retention = self.configuration.inboundRetention
                    let count = try await self.database.withConnection { connection in
                        try await InboundMessages.prune(olderThan: retention, on: connection)
                    }
                    if count > 0 {
                        self.logger.info("forgot providers' message ids past retention", metadata: ["ids": "\(count)"])
                    }
                } catch {
                    self.logger.warning("message id prune failed", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
        }
    }

    /// The lane of a citizen: by the `citizen` header ingest sets (a hash of channel and address), else by
    /// message id.
    static func lane(of delivery: AMQPDelivery, count: Int) -> Int {
        let key = delivery.properties.headers["citizen"]?.stringValue ?? delivery.properties.messageID ?? ""
        return Int(CitizenKey.hash(key) % UInt64(count))
    }

    private var settlement: Settlement {
        Settlement(what: "command", logger: logger, poison: poison, failures: failures)
    }

    /// Applies the commands a lane took, in one transaction; one by one when that fails.
    func handleCommands(_ deliveries: [AMQPDelivery]) async {
        let decoded = deliveries.compactMap { delivery in
            settlement.decode(from: delivery, reading: CitizenCommand.init(json:)).map { (delivery, $0) }
        }
        if decoded.count > 1 {
            let handler = self.handler
            let commands = decoded.map(\.1)
            do {
                let outcomes = try await database.withTransaction { connection in
                    try await handler.apply(batch: commands, on: connection)
                }
                transactions.increment()
                await afterCommit(outcomes)
                for ((delivery, command), outcome) in zip(decoded, outcomes) {
                    applied(command, outcome)
                    delivery.ack()
                }
                return
            } catch {
                logger.debug(
                    "a batch of commands failed; applying them one by one",
                    metadata: ["commands": "\(commands.count)", "error": "\(String(reflecting: error))"]
                )
            }
        }
        for (delivery, command) in decoded {
            let handler = self.handler
            do {
                let outcome = try await database.withTransaction { try await handler.apply(command, on: $0) }
                transactions.increment()
                await afterCommit([outcome])
                applied(command, outcome)
                delivery.ack()
            } catch {
                failures.increment()
                let logger = logger(for: command)
                if delivery.redelivered, Self.refusedForGood(error) {
                    // Refused again for the same reason: it would be refused for ever.
                    poison.increment()
                    logger.error(
                        "command refused by the database again: sent to the dead-letter queue",
                        metadata: ["error": "\(String(reflecting: error))", "command": "\(command.kind.rawValue)"]
                    )
                    delivery.reject(requeue: false)
                } else {
                    logger.warning(
                        "command put back after an error", metadata: ["error": "\(String(reflecting: error))"])
                    try? await Task.sleep(for: .seconds(1))
                    delivery.nack(requeue: true)
                }
            }
        }
    }

    /// Whether the database refused a command for what it is (a constraint, a trigger, bad data), not for a
    /// passing reason (the connection, a deadlock or serialisation failure, a shutdown, a race on a unique key
    /// with another replica), so that trying it again cannot help.
    static func refusedForGood(_ error: any Error) -> Bool {
        guard let error = error as? DatabaseError, error.code == .server, let state = error.sqlState else {
            return false
        }
        let passing = ["08", "40", "53", "57", "58", "55P03", "23505"]
        return !passing.contains { state.hasPrefix($0) }
    }

    private func logger(for command: CitizenCommand) -> Logger {
        var logger = self.logger
        logger[metadataKey: "correlation.id"] = "\(command.correlationID)"
        logger[metadataKey: "channel"] = "\(command.channel.rawValue)"
        logger[metadataKey: "address"] = "\(Mask.address(command.address))"
        return logger
    }

    private func applied(_ command: CitizenCommand, _ outcome: CommandHandler.Outcome) {
        commands.increment()
        if outcome.duplicate { duplicates.increment() }
        if outcome.reply != nil { replies.increment() }
        guard logger.logLevel <= .debug else { return }
        logger(for: command).debug(
            "command applied", metadata: ["command": "\(command.kind.rawValue)", "duplicate": "\(outcome.duplicate)"]
        )
    }

    /// What follows a commit: reports kept for sends not recorded yet are tried once more (the dispatcher may have
    /// recorded them meanwhile), and the replies are published, all at once. Neither can undo the commit, so
    /// neither fails the commands: a reply the broker did not take stays in the outbox for the relay's sweep, and a
    /// kept report for the registry's own sweep.
    func afterCommit(_ outcomes: [CommandHandler.Outcome]) async {
        let kept = Dictionary(grouping: outcomes.compactMap(\.keptReport), by: \.channel)
        if !kept.isEmpty {
            do {
                try await database.withConnection { connection in
                    for (channel, reports) in kept {
                        _ = try await DeliveryReports.applyKept(
                            channel: channel, providerMessageIDs: reports.map(\.providerMessageID), on: connection
                        )
                    }
                }
            } catch {
                logger.warning("kept reports left for the sweep", metadata: ["error": "\(String(reflecting: error))"])
            }
        }
        // A citizen's replies go out in the order of their commands; different citizens' all at once.
        var chains: [String: [OutboxMessage]] = [:]
        for outcome in outcomes {
            if let reply = outcome.reply { chains[outcome.citizen, default: []].append(reply) }
        }
        let replies = chains.values.reduce(0) { $0 + $1.count }
        if replies > 0 {
            do {
                try await relay.publishCommitted(chains: Array(chains.values))
            } catch {
                logger.warning(
                    "replies left in the outbox for its sweep",
                    metadata: ["replies": "\(replies)", "error": "\(String(reflecting: error))"]
                )
            }
        }
    }

    func handleEvent(_ delivery: AMQPDelivery) async {
        guard delivery.routingKey == RecipientUnreachable.routingKey else {
            delivery.ack()  // delivery.* events are for other consumers
            return
        }
        let settlement = Settlement(what: "event", logger: logger, poison: poison, failures: failures)
        guard let event = settlement.decode(RecipientUnreachable.self, from: delivery) else { return }
        await settlement.acknowledge(delivery) {
            let changed = try await database.withConnection {
                try await Subscribers.deactivate(
                    channel: event.channel, address: event.address, reason: .unreachable, on: $0
                )
            }
            if changed {
                deactivated.increment()
                logger.info(
                    "address deactivated: the provider refuses it",
                    metadata: [
                        "channel": "\(event.channel.rawValue)", "address": "\(Mask.address(event.address))",
                        "code": "\(event.code)",
                    ]
                )
            }
        }
    }
}
