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
/// apply in the order they were sent. Each command commits its effect and its reply (an outbox row) together; the
/// reply is then published as a delivery job of one recipient and the command acknowledged. A command that cannot
/// be decoded goes to the dead-letter queue; a database or broker failure puts it back after a pause.
public final class Registry: Service, Sendable {
    public struct Configuration: Sendable {
        public var lanes: Int
        public var prefetch: Int

        public init(lanes: Int = 16, prefetch: Int = 128) {
            self.lanes = max(1, lanes)
            self.prefetch = max(self.lanes, prefetch)
        }
    }

    private let configuration: Configuration
    private let amqp: AMQPConnection
    private let database: PostgresClient
    private let relay: OutboxRelay
    private let handler: CommandHandler
    private let logger: Logger
    private let commands = Counter(label: "banditore_registry_commands_total")
    private let duplicates = Counter(label: "banditore_registry_duplicates_total")
    private let replies = Counter(label: "banditore_registry_replies_total")
    private let deactivated = Counter(label: "banditore_registry_deactivated_total")
    private let poison = Counter(label: "banditore_registry_poison_total")
    private let failures = Counter(label: "banditore_registry_failures_total")

    public init(
        configuration: Configuration, amqp: AMQPConnection, database: PostgresClient, relay: OutboxRelay,
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
        let lanes = (0..<configuration.lanes).map { _ in AsyncStream<AMQPDelivery>.makeStream() }
        await withTaskGroup { group in
            for lane in lanes {
                group.addTask {
                    for await delivery in lane.stream { await self.handleCommand(delivery) }
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
                    lanes[Self.lane(of: delivery, count: lanes.count)].continuation.yield(delivery)
                }
            } catch {
                logger.error("command consumer ended", metadata: ["error": "\(String(reflecting: error))"])
            }
            for lane in lanes { lane.continuation.finish() }
            eventConsumer.cancel()
            await group.waitForAll()
        }
        logger.info("registry stopped")
    }

    /// Every 30 s: applies providers' reports that came before their send was recorded, forgets old ones.
    private func maintain() async {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(30))
                do {
                    try await self.database.withConnection { connection in
                        try await DeliveryReports.applyKeptRecent(on: connection)
                        try await DeliveryReports.prune(on: connection)
                    }
                } catch {
                    self.logger.warning("report sweep failed", metadata: ["error": "\(String(reflecting: error))"])
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

    func handleCommand(_ delivery: AMQPDelivery) async {
        guard let command = settlement.decode(CitizenCommand.self, from: delivery) else { return }
        var logger = self.logger
        logger[metadataKey: "correlation.id"] = "\(command.correlationID)"
        logger[metadataKey: "channel"] = "\(command.channel.rawValue)"
        logger[metadataKey: "address"] = "\(Mask.address(command.address))"
        await settlement.acknowledge(delivery, logger: logger) {
            let outcome = try await apply(command)
            commands.increment()
            if outcome.duplicate { duplicates.increment() }
            if outcome.reply != nil { replies.increment() }
            logger.debug(
                "command applied",
                metadata: ["command": "\(command.kind.rawValue)", "duplicate": "\(outcome.duplicate)"]
            )
        }
    }

    /// Applies `command` in its transaction, then does what must follow the commit: a report kept for a send not
    /// recorded yet is tried once more (the dispatcher may have recorded it meanwhile), and the reply is published.
    func apply(_ command: CitizenCommand) async throws -> CommandHandler.Outcome {
        let handler = self.handler
        let outcome = try await database.withTransaction { try await handler.apply(command, on: $0) }
        if let kept = outcome.keptReport {
            _ = try await database.withConnection {
                try await DeliveryReports.applyKept(
                    channel: kept.channel, providerMessageIDs: [kept.providerMessageID], on: $0
                )
            }
        }
        if let reply = outcome.reply { try await relay.publishCommitted(reply) }
        return outcome
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
                try await Subscriber.deactivate(
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
