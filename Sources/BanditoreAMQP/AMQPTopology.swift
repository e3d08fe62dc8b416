/// An exchange to declare.
public struct AMQPExchange: Sendable, Hashable {
    public enum Kind: String, Sendable {
        case direct, topic, fanout, headers
    }

    public var name: String
    public var kind: Kind
    public var durable: Bool
    public var autoDelete: Bool
    public var isInternal: Bool
    public var arguments: AMQPTable

    public init(
        name: String,
        kind: Kind,
        durable: Bool = true,
        autoDelete: Bool = false,
        isInternal: Bool = false,
        arguments: AMQPTable = [:]
    ) {
        self.name = name
        self.kind = kind
        self.durable = durable
        self.autoDelete = autoDelete
        self.isInternal = isInternal
        self.arguments = arguments
    }
}

/// A queue to declare. Common arguments have their own properties; anything else goes in `arguments`.
public struct AMQPQueue: Sendable, Hashable {
    public enum QueueType: String, Sendable {
        case classic, quorum
    }

    public var name: String
    public var durable: Bool
    public var exclusive: Bool
    public var autoDelete: Bool
    public var deadLetterExchange: String?
    public var deadLetterRoutingKey: String?
    /// Message TTL in milliseconds.
    public var messageTTL: Int?
    public var maxPriority: UInt8?
    public var type: QueueType?
    public var arguments: AMQPTable

    public init(
        name: String,
        durable: Bool = true,
        exclusive: Bool = false,
        autoDelete: Bool = false,
        deadLetterExchange: String? = nil,
        deadLetterRoutingKey: String? = nil,
        messageTTL: Int? = nil,
        maxPriority: UInt8? = nil,
        type: QueueType? = nil,
        arguments: AMQPTable = [:]
    ) {
        self.name = name
        self.durable = durable
        self.exclusive = exclusive
        self.autoDelete = autoDelete
        self.deadLetterExchange = deadLetterExchange
        self.deadLetterRoutingKey = deadLetterRoutingKey
        self.messageTTL = messageTTL
        self.maxPriority = maxPriority
        self.type = type
        self.arguments = arguments
    }

    /// The declaration arguments, with the typed properties folded in.
    public var allArguments: AMQPTable {
        var args = arguments
        if let deadLetterExchange { args["x-dead-letter-exchange"] = .string(deadLetterExchange) }
        if let deadLetterRoutingKey { args["x-dead-letter-routing-key"] = .string(deadLetterRoutingKey) }
        if let messageTTL { args["x-message-ttl"] = .int(Int64(messageTTL)) }
        if let maxPriority { args["x-max-priority"] = .int(Int64(maxPriority)) }
        if let type { args["x-queue-type"] = .string(type.rawValue) }
        return args
    }
}

/// A binding of a queue to an exchange.
public struct AMQPBinding: Sendable, Hashable {
    public var queue: String
    public var exchange: String
    public var routingKey: String
    public var arguments: AMQPTable

    public init(queue: String, exchange: String, routingKey: String, arguments: AMQPTable = [:]) {
        self.queue = queue
        self.exchange = exchange
        self.routingKey = routingKey
        self.arguments = arguments
    }
}

/// A set of exchanges, queues and bindings, declared in that order. The connection remembers what it declared and
/// declares it again after reconnecting.
public struct AMQPTopology: Sendable, Hashable {
    public var exchanges: [AMQPExchange]
    public var queues: [AMQPQueue]
    public var bindings: [AMQPBinding]

    public init(exchanges: [AMQPExchange] = [], queues: [AMQPQueue] = [], bindings: [AMQPBinding] = []) {
        self.exchanges = exchanges
        self.queues = queues
        self.bindings = bindings
    }

    /// Both topologies together.
    public func merging(_ other: AMQPTopology) -> AMQPTopology {
        AMQPTopology(
            exchanges: exchanges + other.exchanges.filter { !exchanges.contains($0) },
            queues: queues + other.queues.filter { !queues.contains($0) },
            bindings: bindings + other.bindings.filter { !bindings.contains($0) }
        )
    }
}
