import BanditoreAMQP
import BanditoreCore
import Foundation
import Logging
import Metrics

extension AMQPMessage {
    /// One of our messages: a persistent JSON body with its id, type and time.
    public static func json(
        _ body: [UInt8], type: String, messageID: String, correlationID: String? = nil, priority: UInt8? = nil,
        headers: AMQPTable = [:], timestamp: Date = Date()
    ) -> AMQPMessage {
        AMQPMessage(
            body: body,
            properties: AMQPProperties(
                contentType: "application/json", headers: headers, persistent: true, priority: priority,
                correlationID: correlationID, messageID: messageID, timestamp: timestamp, type: type
            )
        )
    }

    /// `value` encoded as one of our messages.
    public static func json(
        encoding value: some Encodable, type: String, messageID: String, correlationID: String? = nil,
        priority: UInt8? = nil, headers: AMQPTable = [:], timestamp: Date = Date()
    ) throws -> AMQPMessage {
        json(
            try MessageBody.encode(value), type: type, messageID: messageID, correlationID: correlationID,
            priority: priority, headers: headers, timestamp: timestamp
        )
    }
}

/// The JSON body of one of our messages: delivery jobs (hundreds of recipients each, millions for a big bulletin)
/// and citizens' commands (one per webhook) with their own writers, anything else with `JSONEncoder`.
public enum MessageBody {
    public static func encode(_ value: some Encodable) throws -> [UInt8] {
        if let job = value as? DeliveryJob { return job.json() }
        if let command = value as? CitizenCommand { return command.json() }
        return Array(try JSONEncoder().encode(value))
    }
}

/// How our consumers settle what they receive: a message that cannot be decoded goes to the dead-letter queue at
/// once (it would fail the same way forever); a failure of the database or the broker puts the message back after
/// a pause (the next attempt may well succeed, and the pause keeps a dead dependency from spinning the consumer).
public struct Settlement: Sendable {
    let what: String
    let logger: Logger
    let poison: Counter
    let failures: Counter?
    let pause: Duration

    /// `what` names the message in logs ("job", "command"); `poison` counts the dead-lettered ones, `failures` the
    /// ones put back.
    public init(what: String, logger: Logger, poison: Counter, failures: Counter? = nil, pause: Duration = .seconds(1))
    {
        self.what = what
        self.logger = logger
        self.poison = poison
        self.failures = failures
        self.pause = pause
    }

    /// The body of `delivery` as a `T` that passes `check`; else rejects it to the dead-letter queue and returns nil.
    public func decode<T: Decodable>(
        _ type: T.Type, from delivery: AMQPDelivery, check: (T) throws -> Void = { _ in }
    ) -> T? {
        decode(from: delivery, reading: { try JSONDecoder().decode(T.self, from: Data($0)) }, check: check)
    }

    /// The body of `delivery` as `read` reads it, if it passes `check`; else rejects it to the dead-letter queue
    /// and returns nil.
    public func decode<T>(
        from delivery: AMQPDelivery, reading read: ([UInt8]) throws -> T, check: (T) throws -> Void = { _ in }
    ) -> T? {
        do {
            let value = try read(delivery.body)
            try check(value)
            return value
        } catch {
            poison.increment()
            logger.error(
                "undecodable \(what) sent to the dead-letter queue",
                metadata: ["error": "\(error)", "amqp.messageId": "\(delivery.properties.messageID ?? "")"]
            )
            delivery.reject(requeue: false)
            return nil
        }
    }

    /// Runs `work` and acknowledges `delivery`; if it throws, puts the delivery back after the pause.
    public func acknowledge(
        _ delivery: AMQPDelivery, logger: Logger? = nil, after work: () async throws -> Void
    ) async {
        do {
            try await work()
            delivery.ack()
        } catch {
            failures?.increment()
            (logger ?? self.logger).warning(
                "\(what) put back after an error", metadata: ["error": "\(String(reflecting: error))"]
            )
            try? await Task.sleep(for: pause)
            delivery.nack(requeue: true)
        }
    }
}
