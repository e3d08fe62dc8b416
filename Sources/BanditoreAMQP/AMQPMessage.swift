import struct Foundation.Date

/// The basic properties of a message.
public struct AMQPProperties: Sendable, Hashable {
    public var contentType: String?
    public var contentEncoding: String?
    public var headers: AMQPTable
    /// Persistent (delivery mode 2) unless set to false.
    public var persistent: Bool
    public var priority: UInt8?
    public var correlationID: String?
    public var replyTo: String?
    /// Per-message TTL in milliseconds, as a decimal string (AMQP's `expiration`).
    public var expiration: String?
    public var messageID: String?
    public var timestamp: Date?
    public var type: String?
    public var appID: String?

    public init(
        contentType: String? = nil,
        contentEncoding: String? = nil,
        headers: AMQPTable = [:],
        persistent: Bool = true,
        priority: UInt8? = nil,
        correlationID: String? = nil,
        replyTo: String? = nil,
        expiration: String? = nil,
        messageID: String? = nil,
        timestamp: Date? = nil,
        type: String? = nil,
        appID: String? = nil
    ) {
        self.contentType = contentType
        self.contentEncoding = contentEncoding
        self.headers = headers
        self.persistent = persistent
        self.priority = priority
        self.correlationID = correlationID
        self.replyTo = replyTo
        self.expiration = expiration
        self.messageID = messageID
        self.timestamp = timestamp
        self.type = type
        self.appID = appID
    }
}

/// A message to publish.
public struct AMQPMessage: Sendable {
    public var body: [UInt8]
    public var properties: AMQPProperties

    public init(body: [UInt8], properties: AMQPProperties = AMQPProperties()) {
        self.body = body
        self.properties = properties
    }

    /// A message whose body is the UTF-8 of `string`.
    public init(string: String, properties: AMQPProperties = AMQPProperties()) {
        self.init(body: Array(string.utf8), properties: properties)
    }
}

/// A message received by a consumer. Settle it once with ``ack(multiple:)``, ``nack(requeue:multiple:)`` or
/// ``reject(requeue:)``.
///
/// A class rather than a struct: deliveries pass through batches and iterators, and copying a reference is much
/// cheaper than copying every field.
public final class AMQPDelivery: Sendable {
    public let body: [UInt8]
    public let properties: AMQPProperties
    public let exchange: String
    public let routingKey: String
    public let redelivered: Bool
    public let deliveryTag: UInt64
    let settler: Settler

    init(
        body: [UInt8], properties: AMQPProperties, exchange: String, routingKey: String, redelivered: Bool,
        deliveryTag: UInt64, settler: Settler
    ) {
        self.body = body
        self.properties = properties
        self.exchange = exchange
        self.routingKey = routingKey
        self.redelivered = redelivered
        self.deliveryTag = deliveryTag
        self.settler = settler
    }

    /// The body as UTF-8 text.
    public var bodyString: String { String(decoding: body, as: UTF8.self) }

    /// Acknowledges this delivery (and, with `multiple`, every earlier unsettled one of its consumer).
    ///
    /// After the connection was lost and re-established the delivery's tag is no longer valid: the broker
    /// redelivers the message, and this call does nothing.
    public func ack(multiple: Bool = false) {
        settler.settle(.ack(multiple: multiple), tag: deliveryTag)
    }

    /// Negatively acknowledges this delivery: requeued, or dead-lettered when `requeue` is false.
    public func nack(requeue: Bool, multiple: Bool = false) {
        settler.settle(.nack(requeue: requeue, multiple: multiple), tag: deliveryTag)
    }

    /// Rejects this delivery: requeued, or dead-lettered when `requeue` is false.
    public func reject(requeue: Bool) {
        settler.settle(.reject(requeue: requeue), tag: deliveryTag)
    }
}

/// How a delivery is settled.
enum Settlement: Sendable {
    case ack(multiple: Bool)
    case nack(requeue: Bool, multiple: Bool)
    case reject(requeue: Bool)
}

/// Routes a settlement back to the connection thread that owns the channel the delivery came on.
struct Settler: Sendable {
    let core: ConnectionCore
    let channel: UInt16
    let generation: UInt64

    func settle(_ settlement: Settlement, tag: UInt64) {
        core.enqueue(.settle(channel: channel, generation: generation, tag: tag, settlement))
    }
}
