import BanditoreAMQP
import BanditoreCore

/// The AMQP topology every service declares at start (idempotently): exchanges, queues and bindings of
/// DESIGN.md.
///
/// - `banditore.commands` (topic): `command.<channel>` → `registry.commands`, a quorum queue.
/// - `banditore.bulletins` (direct): `bulletin.submitted` → `composer.bulletins`.
/// - `banditore.deliveries` (direct), one queue per channel and rank (``DeliveryRank``): `<channel>` →
///   `dispatch.<channel>` (normal bulletins), `<channel>.urgent` → `dispatch.<channel>.urgent` and
///   `<channel>.replies` → `dispatch.<channel>.replies` (quorum queues, each with a consumer of its own in every
///   dispatcher, so that urgent work and replies are taken at once whatever normal jobs a replica holds).
/// - `banditore.retry` (direct): `<rank key>.<step>` → `<rank queue>.retry.<step>`, delay queues whose messages
///   expire back into `banditore.deliveries` with their rank's routing key.
/// - `banditore.dead` (direct): `<queue>` → `<queue>.dead`, for poison messages and exhausted retries.
/// - `banditore.events` (topic): `delivery.*` and `recipient.unreachable` → `registry.events`.
public enum BanditoreTopology {
    public static let commandsExchange = "banditore.commands"
    public static let bulletinsExchange = "banditore.bulletins"
    public static let deliveriesExchange = "banditore.deliveries"
    public static let retryExchange = "banditore.retry"
    public static let deadExchange = "banditore.dead"
    public static let eventsExchange = "banditore.events"

    public static let registryCommands = "registry.commands"
    public static let registryEvents = "registry.events"
    public static let composerBulletins = "composer.bulletins"

    /// Delays of the retry steps, in milliseconds: 1 s, 5 s, 30 s, 2 min, 10 min.
    public static let retryDelays = [1_000, 5_000, 30_000, 120_000, 600_000]
    /// Highest priority of a delivery job (urgent bulletins).
    public static let maxPriority: UInt8 = 9

    /// The channel's queue of normal bulletins; its dead letters hold those of every rank.
    public static func dispatchQueue(_ channel: Channel) -> String { "dispatch.\(channel.rawValue)" }
    /// The channel's queue of a rank.
    public static func dispatchQueue(_ channel: Channel, _ rank: DeliveryRank) -> String {
        switch rank {
        case .normal: dispatchQueue(channel)
        case .urgent: "dispatch.\(channel.rawValue).urgent"
        case .reply: "dispatch.\(channel.rawValue).replies"
        }
    }
    /// The routing key of a rank's jobs in `banditore.deliveries`.
    public static func deliveryRoutingKey(_ channel: Channel, _ rank: DeliveryRank) -> String {
        switch rank {
        case .normal: channel.rawValue
        case .urgent: "\(channel.rawValue).urgent"
        case .reply: "\(channel.rawValue).replies"
        }
    }
    public static func retryQueue(_ channel: Channel, step: Int) -> String {
        retryQueue(channel, .normal, step: step)
    }
    public static func retryQueue(_ channel: Channel, _ rank: DeliveryRank, step: Int) -> String {
        "\(dispatchQueue(channel, rank)).retry.\(step)"
    }
    /// The routing key of a rank's retries in `banditore.retry`.
    public static func retryRoutingKey(_ channel: Channel, _ rank: DeliveryRank, step: Int) -> String {
        "\(deliveryRoutingKey(channel, rank)).\(step)"
    }

    /// A delivery job as it is published to `banditore.deliveries`: the message (normal bulletins in a priority
    /// queue at priority 0) and its rank's routing key. The one place that turns a job into its AMQP message.
    public static func delivery(_ job: DeliveryJob) -> (message: AMQPMessage, routingKey: String) {
        let message = AMQPMessage.json(
            job.json(), type: DeliveryJob.messageType, messageID: job.id, correlationID: job.correlationID,
            priority: job.urgent ? maxPriority : 0
        )
        return (message, deliveryRoutingKey(job.channel, job.rank))
    }
    public static func deadQueue(_ queue: String) -> String { "\(queue).dead" }

    /// The queues whose depth a service reports on `/metrics`: what it consumes, their dead letters and (for a
    /// dispatcher) the retries waiting out their delay.
    public static var composerQueues: [String] { [composerBulletins, deadQueue(composerBulletins)] }
    public static var registryQueues: [String] {
        [registryCommands, deadQueue(registryCommands), registryEvents, deadQueue(registryEvents)]
    }
    public static func dispatchQueues(_ channel: Channel) -> [String] {
        DeliveryRank.allCases.map { dispatchQueue(channel, $0) } + [deadQueue(dispatchQueue(channel))]
            + DeliveryRank.allCases.flatMap { rank in retryDelays.indices.map { retryQueue(channel, rank, step: $0) } }
    }

    /// Everything, as one declaration.
    public static var all: AMQPTopology {
        var exchanges = [
            AMQPExchange(name: commandsExchange, kind: .topic),
            AMQPExchange(name: bulletinsExchange, kind: .direct),
            AMQPExchange(name: deliveriesExchange, kind: .direct),
            AMQPExchange(name: retryExchange, kind: .direct),
            AMQPExchange(name: deadExchange, kind: .direct),
            AMQPExchange(name: eventsExchange, kind: .topic),
        ]
        exchanges.sort { $0.name < $1.name }
        var queues: [AMQPQueue] = []
        var bindings: [AMQPBinding] = []

        func consumed(_ name: String, priority: UInt8? = nil, type: AMQPQueue.QueueType? = nil) {
            queues.append(
                AMQPQueue(
                    name: name, deadLetterExchange: deadExchange, deadLetterRoutingKey: name, maxPriority: priority,
                    type: type
                )
            )
            queues.append(AMQPQueue(name: deadQueue(name)))
            bindings.append(AMQPBinding(queue: deadQueue(name), exchange: deadExchange, routingKey: name))
        }

        // A quorum queue: every webhook waits for its command's confirm, and a quorum queue's log confirms many
        // publishers' messages per disk write where a classic queue wrote and confirmed a few at a time
        // (scripts/bench/subscribe: a quarter more webhooks per second, p99 down by a third).
        consumed(registryCommands, type: .quorum)
        bindings.append(AMQPBinding(queue: registryCommands, exchange: commandsExchange, routingKey: "command.*"))
        consumed(registryEvents)
        bindings.append(
            AMQPBinding(queue: registryEvents, exchange: eventsExchange, routingKey: "recipient.unreachable"))
        bindings.append(AMQPBinding(queue: registryEvents, exchange: eventsExchange, routingKey: "delivery.*"))
        consumed(composerBulletins)
        bindings.append(
            AMQPBinding(queue: composerBulletins, exchange: bulletinsExchange, routingKey: "bulletin.submitted")
        )

        for channel in Channel.allCases {
            let queue = dispatchQueue(channel)
            consumed(queue, priority: maxPriority)
            for rank in DeliveryRank.allCases {
                let rankQueue = dispatchQueue(channel, rank)
                if rank != .normal {
                    // Poison jobs of every rank go to the channel's one dead-letter queue.
                    queues.append(
                        AMQPQueue(
                            name: rankQueue, deadLetterExchange: deadExchange, deadLetterRoutingKey: queue,
                            type: .quorum
                        )
                    )
                }
                let key = deliveryRoutingKey(channel, rank)
                bindings.append(AMQPBinding(queue: rankQueue, exchange: deliveriesExchange, routingKey: key))
                for (step, delay) in retryDelays.enumerated() {
                    let retry = retryQueue(channel, rank, step: step)
                    queues.append(
                        AMQPQueue(
                            name: retry, deadLetterExchange: deliveriesExchange, deadLetterRoutingKey: key,
                            messageTTL: delay)
                    )
                    bindings.append(
                        AMQPBinding(
                            queue: retry, exchange: retryExchange,
                            routingKey: retryRoutingKey(channel, rank, step: step))
                    )
                }
            }
        }
        return AMQPTopology(exchanges: exchanges, queues: queues, bindings: bindings)
    }
}
