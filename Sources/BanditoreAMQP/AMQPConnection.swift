import Foundation
import Logging
import ServiceLifecycle

/// A connection to RabbitMQ over rabbitmq-c.
///
/// Each connection owns one thread on which every rabbitmq-c call runs; callers on any task enqueue work and
/// await its outcome, so blocking C calls never run on Swift's cooperative pool. The connection publishes under
/// publisher confirms, consumes with a prefetch, and after a broker restart reconnects with backoff, declares its
/// topology again and resumes its consumers. Publishes that were not confirmed when the connection dropped fail
/// with ``AMQPError/Code/connectionLost``; while it is down, new publishes fail at once with
/// ``AMQPError/Code/notConnected``.
///
/// As a `Service` it closes on graceful shutdown; otherwise call ``close()`` (or use ``withConnection(_:logger:_:)``).
public final class AMQPConnection: Sendable, Service {
    let core: ConnectionCore
    public let configuration: AMQPConfiguration
    private let logger: Logger

    private init(core: ConnectionCore, configuration: AMQPConfiguration, logger: Logger) {
        self.core = core
        self.configuration = configuration
        self.logger = logger
    }

    /// Connects, failing fast (within `connectTimeout`) when the broker cannot be reached or refuses the login.
    public static func connect(_ configuration: AMQPConfiguration, logger: Logger) async throws -> AMQPConnection {
        let core = ConnectionCore(maxUnconfirmed: configuration.maxUnconfirmed)
        let worker = Worker(core: core, configuration: configuration, logger: logger)
        nonisolated(unsafe) let unsafeWorker = worker  // handed over to the thread, never touched here again
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let thread = Thread { unsafeWorker.run(started: continuation) }
            thread.name = "amqp-\(configuration.connectionName)"
            thread.start()
        }
        logger.debug("AMQP connected", metadata: ["amqp.host": "\(configuration.host):\(configuration.port)"])
        return AMQPConnection(core: core, configuration: configuration, logger: logger)
    }

    /// Connects from an `amqp://` URL.
    public static func connect(url: String, logger: Logger) async throws -> AMQPConnection {
        try await connect(AMQPConfiguration(url: url), logger: logger)
    }

    /// Runs `body` with a connection, closing it on every path.
    public static func withConnection<T>(
        _ configuration: AMQPConfiguration,
        logger: Logger,
        _ body: (AMQPConnection) async throws -> T
    ) async throws -> T {
        let connection = try await connect(configuration, logger: logger)
        do {
            let result = try await body(connection)
            await connection.close()
            return result
        } catch {
            await connection.close()
            throw error
        }
    }

    /// Whether the connection is up (false while it reconnects and after it closed).
    public var isConnected: Bool { core.isConnected }

    /// Closes the connection: waits briefly for outstanding confirms, ends consumers, and stops the thread.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            core.enqueue(.shutdown(continuation))
        }
    }

    public func run() async throws {
        try? await gracefulShutdown()
        await close()
    }

    // MARK: Topology

    /// Declares exchanges, queues and bindings (idempotent); they are declared again after every reconnect.
    public func declare(_ topology: AMQPTopology) async throws {
        try await perform { try $0.declare(topology) }
    }

    /// The number of ready messages and consumers of a queue (a passive declare: exact at once).
    public func inspectQueue(_ name: String) async throws -> AMQPQueueInfo {
        try await perform { try $0.inspectQueue(name) }
    }

    /// Removes every ready message from a queue and returns how many there were.
    @discardableResult
    public func purgeQueue(_ name: String) async throws -> Int {
        try await perform { try $0.purgeQueue(name) }
    }

    public func deleteQueue(_ name: String) async throws {
        try await perform { try $0.deleteQueue(name) }
    }

    public func deleteExchange(_ name: String) async throws {
        try await perform { try $0.deleteExchange(name) }
    }

    // MARK: Publishing

    /// Publishes without waiting for the broker's confirm; ``waitForConfirms()`` reports the outcome of every
    /// message published this way. Waits only when `maxUnconfirmed` messages are already unconfirmed.
    ///
    /// - Parameters:
    ///   - message: body and properties (persistent unless told otherwise).
    ///   - exchange: the exchange, `""` for the default one.
    ///   - routingKey: the routing key.
    ///   - mandatory: when true (the default) a message no queue receives is an error rather than dropped.
    public func publish(
        _ message: AMQPMessage,
        exchange: String,
        routingKey: String,
        mandatory: Bool = true
    ) async throws {
        try await core.enqueuePublish(
            PublishRequest(
                exchange: exchange, routingKey: routingKey, mandatory: mandatory, message: message,
                waiter: nil)
        )
    }

    /// Publishes and returns once the broker confirmed this message; throws when it was nacked, returned
    /// (unroutable and mandatory), or the connection dropped first.
    public func publishConfirmed(
        _ message: AMQPMessage,
        exchange: String,
        routingKey: String,
        mandatory: Bool = true
    ) async throws {
        try await core.reserveSlot()
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            core.enqueue(
                .publish(
                    PublishRequest(
                        exchange: exchange, routingKey: routingKey, mandatory: mandatory,
                        message: message, waiter: continuation))
            )
        }
    }

    /// Returns once every message published so far with ``publish(_:exchange:routingKey:mandatory:)`` is
    /// confirmed. Throws, with the number of messages concerned, when any of them was nacked, returned, or lost
    /// with the connection since the previous call.
    public func waitForConfirms() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            core.enqueue(.barrier(continuation))
        }
    }

    // MARK: Consuming

    /// Starts a consumer on its own channel with the given prefetch. Deliveries arrive as an `AsyncSequence`;
    /// after a reconnect the consumer resumes by itself (unsettled deliveries come again, marked redelivered).
    /// Iterating ends when the consumer is cancelled, or the connection closed.
    public func consume(queue: String, prefetch: UInt16 = 100) async throws -> AMQPConsumer {
        let id = core.makeConsumerID()
        let (stream, continuation) = AsyncThrowingStream<[AMQPDelivery], any Error>.makeStream()
        let core = self.core
        continuation.onTermination = { _ in core.enqueue(.cancelConsumer(id: id)) }
        try await perform { worker in
            try worker.addConsumer(
                Worker.ConsumerState(id: id, queue: queue, prefetch: prefetch, continuation: continuation)
            )
        }
        return AMQPConsumer(id: id, stream: stream, core: core)
    }

    // MARK: Internals

    func perform<T: Sendable>(_ body: @escaping @Sendable (Worker) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            core.enqueue(
                .perform(
                    work: { worker in continuation.resume(with: Result { try body(worker) }) },
                    fail: { continuation.resume(throwing: $0) }
                )
            )
        }
    }
}

/// The deliveries of one consumer.
public struct AMQPConsumer: AsyncSequence, Sendable {
    public typealias Element = AMQPDelivery
    let id: Int
    /// The connection's thread hands over every delivery read in one cycle at once.
    let stream: AsyncThrowingStream<[AMQPDelivery], any Error>
    let core: ConnectionCore

    public func makeAsyncIterator() -> Iterator {
        Iterator(batches: stream.makeAsyncIterator())
    }

    public struct Iterator: AsyncIteratorProtocol {
        var batches: AsyncThrowingStream<[AMQPDelivery], any Error>.AsyncIterator
        var buffer: [AMQPDelivery] = []
        var index = 0

        public mutating func next() async throws -> AMQPDelivery? {
            while index == buffer.count {
                guard let batch = try await batches.next(isolation: #isolation) else { return nil }
                buffer = batch
                index = 0
            }
            defer { index += 1 }
            return buffer[index]
        }
    }

    /// Stops the consumer: its channel closes and the broker requeues what was not settled.
    public func cancel() {
        core.enqueue(.cancelConsumer(id: id))
    }
}
