import BanditoreAMQP
import BanditoreCore

/// The AMQP topology every service declares at start (idempotently): exchanges, queues and bindings of
/// DESIGN.md.
///
/// - `banditore.commands` (topic): `command.<channel>` → `registry.commands`, a quorum queue.
/// - `banditore.bulletins` (direct): `bulletin.submitted` → `composer.bulletins`.
/// - `banditore.deliveries` (direct): `<channel>` → `dispatch.<channel>`, a priority queue so urgent jobs overtake.
/// - `banditore.retry` (direct): `<channel>.<step>` → `dispatch.<channel>.retry.<step>`, delay queues whose
///   messages expire back into `banditore.deliveries` with routing key `<channel>`.
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

    public static func dispatchQueue(_ channel: Channel) -> String { "dispatch.\(channel.rawValue)" }
    public static func retryQueue(_ channel: Channel, step: Int) -> String {
        "dispatch.\(channel.rawValue).retry.\(step)"
    }
    public static func deadQueue(_ queue: String) -> String { "\(queue).dead" }

    /// The queues whose depth a service reports on `/metrics`: what it consumes, their dead letters and (for a
    /// dispatcher) the retries waiting out their delay.
    public static var composerQueues: [String] { [composerBulletins, deadQueue(composerBulletins)] }
    public static var registryQueues: [String] {
        [registryCommands, deadQueue(registryCommands), registryEvents, deadQueue(registryEvents)]
    }
    public static func dispatchQueues(_ channel: Channel) -> [String] {
        [dispatchQueue(channel), deadQueue(dispatchQueue(channel))]
            + retryDelays.indices.map { retryQueue(channel, step: $0) }
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
        bindings.append(AMQPBinding(queue: registryEvents, exchange: eventsExchange, routingKey: "recipient.unreachable"))
        bindings.append(AMQPBinding(queue: registryEvents, exchange: eventsExchange, routingKey: "delivery.*"))
        consumed(composerBulletins)
        bindings.append(
            AMQPBinding(queue: composerBulletins, exchange: bulletinsExchange, routingKey: "bulletin.submitted")
        )

        for channel in Channel.allCases {
            let queue = dispatchQueue(channel)
            consumed(queue, priority: maxPriority)
            bindings.append(AMQPBinding(queue: queue, exchange: deliveriesExchange, routingKey: channel.rawValue))
            for (step, delay) in retryDelays.enumerated() {
                let retry = retryQueue(channel, step: step)
                queues.append(
                    AMQPQueue(
                        name: retry, deadLetterExchange: deliveriesExchange, deadLetterRoutingKey: channel.rawValue,
                        messageTTL: delay
                    )
                )
                bindings.append(
                    AMQPBinding(queue: retry, exchange: retryExchange, routingKey: "\(channel.rawValue).\(step)")
                )
            }
        }
        return AMQPTopology(exchanges: exchanges, queues: queues, bindings: bindings)
    }
}
