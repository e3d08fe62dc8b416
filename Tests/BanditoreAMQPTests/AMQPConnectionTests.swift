import BanditoreTesting
import Foundation
import Logging
import Synchronization
import Testing

@testable import BanditoreAMQP

private let logger = Logger(label: "test.amqp")

private func connect(
    logger: Logger = logger, _ configure: (inout AMQPConfiguration) -> Void = { _ in }
) async throws -> AMQPConnection {
    var configuration = try AMQPConfiguration(url: TestServers.amqpURL())
    configure(&configuration)
    return try await AMQPConnection.connect(configuration, logger: logger)
}

/// A fresh durable queue bound to a fresh direct exchange, deleted afterwards.
private func withQueue<T>(
    _ connection: AMQPConnection,
    queue: (String) -> AMQPQueue = { AMQPQueue(name: $0) },
    _ body: (_ exchange: String, _ queue: String) async throws -> T
) async throws -> T {
    let exchange = TestServers.uniqueName("test.ex")
    let queueName = TestServers.uniqueName("test.q")
    try await connection.declare(
        AMQPTopology(
            exchanges: [AMQPExchange(name: exchange, kind: .direct)],
            queues: [queue(queueName)],
            bindings: [AMQPBinding(queue: queueName, exchange: exchange, routingKey: "k")]
        )
    )
    do {
        let result = try await body(exchange, queueName)
        try? await connection.deleteQueue(queueName)
        try? await connection.deleteExchange(exchange)
        return result
    } catch {
        try? await connection.deleteQueue(queueName)
        try? await connection.deleteExchange(exchange)
        throw error
    }
}

@Suite("AMQP connection against the real broker")
struct AMQPConnectionTests {
    @Test("10,000 persistent messages published under confirms are all consumed and acked")
    func publishAndConsumeTenThousand() async throws {
        let connection = try await connect()
        try await withQueue(connection) { exchange, queue in
            let count = 10_000
            for i in 0..<count {
                let properties = AMQPProperties(
                    contentType: "application/json", headers: ["type": "test", "index": .int(Int64(i))],
                    messageID: "m-\(i)"
                )
                try await connection.publish(
                    AMQPMessage(string: #"{"i":\#(i)}"#, properties: properties), exchange: exchange, routingKey: "k"
                )
            }
            try await connection.waitForConfirms()
            #expect(try await connection.inspectQueue(queue).messageCount == count)

            let consumer = try await connection.consume(queue: queue, prefetch: 500)
            var seen = Set<Int>()
            var received = 0
            for try await delivery in consumer {
                let index = Int(delivery.properties.headers["index"]?.intValue ?? -1)
                #expect(delivery.properties.messageID == "m-\(index)")
                #expect(delivery.properties.contentType == "application/json")
                #expect(delivery.properties.persistent)
                #expect(delivery.bodyString == #"{"i":\#(index)}"#)
                seen.insert(index)
                received += 1
                if received % 100 == 0 || received == count { delivery.ack(multiple: true) }
                if received == count { break }
            }
            consumer.cancel()
            #expect(seen.count == count)
            #expect(await eventually { (try? await connection.inspectQueue(queue).messageCount) == 0 })
        }
        await connection.close()
    }

    @Test("publishConfirmed returns after the confirm; an unroutable mandatory message is an error")
    func confirmedAndReturned() async throws {
        let connection = try await connect()
        try await withQueue(connection) { exchange, queue in
            try await connection.publishConfirmed(AMQPMessage(string: "one"), exchange: exchange, routingKey: "k")
            #expect(try await connection.inspectQueue(queue).messageCount == 1)

            await #expect {
                try await connection.publishConfirmed(
                    AMQPMessage(string: "lost", properties: AMQPProperties(messageID: "nowhere")),
                    exchange: exchange, routingKey: "no-such-key"
                )
            } throws: { error in
                (error as? AMQPError)?.code == .returned && (error as? AMQPError)?.replyCode == 312
            }

            // Without a waiter, the failure is reported by waitForConfirms, with the count.
            try await connection.publish(AMQPMessage(string: "x"), exchange: exchange, routingKey: "no-such-key")
            try await connection.publish(AMQPMessage(string: "y"), exchange: exchange, routingKey: "k")
            await #expect {
                try await connection.waitForConfirms()
            } throws: { error in
                (error as? AMQPError)?.code == .returned && (error as? AMQPError)?.messageCount == 1
            }
            // ...once: the next wait is clean.
            try await connection.waitForConfirms()
            #expect(try await connection.inspectQueue(queue).messageCount == 2)
        }
        await connection.close()
    }

    @Test("publishing to a missing exchange fails clearly and the connection keeps working")
    func missingExchange() async throws {
        let connection = try await connect()
        await #expect {
            try await connection.publishConfirmed(
                AMQPMessage(string: "x"), exchange: TestServers.uniqueName("missing"), routingKey: "k"
            )
        } throws: { error in
            (error as? AMQPError)?.code == .channelClosed && (error as? AMQPError)?.replyCode == 404
        }
        try await withQueue(connection) { exchange, queue in
            try await connection.publishConfirmed(AMQPMessage(string: "ok"), exchange: exchange, routingKey: "k")
            #expect(try await connection.inspectQueue(queue).messageCount == 1)
        }
        await connection.close()
    }

    @Test("an inequivalent declaration is refused with the broker's reply and the connection keeps working")
    func inequivalentDeclaration() async throws {
        let connection = try await connect()
        let name = TestServers.uniqueName("test.q")
        try await connection.declare(AMQPTopology(queues: [AMQPQueue(name: name, messageTTL: 1000)]))
        for _ in 0..<2 {  // twice: the control channel is reopened each time
            await #expect {
                try await connection.declare(AMQPTopology(queues: [AMQPQueue(name: name, messageTTL: 2000)]))
            } throws: { error in
                (error as? AMQPError)?.code == .channelClosed && (error as? AMQPError)?.replyCode == 406
            }
        }
        #expect(try await connection.inspectQueue(name).messageCount == 0)
        try await connection.deleteQueue(name)
        await connection.close()
    }

    @Test(
        "a queue of another type is declared anew only when empty and unused; with a message it is kept, and the error says why"
    )
    func queueTypeChanged() async throws {
        let connection = try await connect()
        let name = TestServers.uniqueName("test.q")
        try await connection.declare(AMQPTopology(queues: [AMQPQueue(name: name, type: .classic)]))
        try await connection.publishConfirmed(AMQPMessage(string: "kept"), exchange: "", routingKey: name)
        let quorum = AMQPTopology(queues: [AMQPQueue(name: name, type: .quorum)])
        await #expect {
            try await connection.declare(quorum)
        } throws: { error in
            let error = error as? AMQPError
            return error?.replyCode == 406 && error?.detail?.contains("x-queue-type") == true
                && error?.detail?.contains("not replaced: 1 message(s) ready") == true
        }
        #expect(try await connection.inspectQueue(name).messageCount == 1)
        #expect(try await connection.purgeQueue(name) == 1)
        try await connection.declare(quorum)
        // Now a quorum queue: it is never replaced (the broker cannot delete it only-if-empty), empty or not; the
        // refusal leaves the connection working.
        for message in ["", "new"] {
            if !message.isEmpty {
                try await connection.publishConfirmed(AMQPMessage(string: message), exchange: "", routingKey: name)
            }
            await #expect {
                try await connection.declare(AMQPTopology(queues: [AMQPQueue(name: name, type: .classic)]))
            } throws: { error in
                let detail = (error as? AMQPError)?.detail ?? ""
                return detail.contains("x-queue-type") && !detail.contains("not replaced")
            }
            #expect(try await connection.inspectQueue(name).messageCount == (message.isEmpty ? 0 : 1))
        }
        try await connection.deleteQueue(name)
        await connection.close()
    }

    @Test("a nacked message lands in its dead-letter queue, with its headers and the broker's x-death")
    func nackToDeadLetter() async throws {
        let connection = try await connect()
        let deadExchange = TestServers.uniqueName("test.dlx")
        let deadQueue = TestServers.uniqueName("test.dead")
        try await connection.declare(
            AMQPTopology(
                exchanges: [AMQPExchange(name: deadExchange, kind: .fanout)],
                queues: [AMQPQueue(name: deadQueue)],
                bindings: [AMQPBinding(queue: deadQueue, exchange: deadExchange, routingKey: "")]
            )
        )
        try await withQueue(connection, queue: { AMQPQueue(name: $0, deadLetterExchange: deadExchange) }) {
            exchange, queue in
            try await connection.publishConfirmed(
                AMQPMessage(string: "poison", properties: AMQPProperties(headers: ["attempt": 3], messageID: "p1")),
                exchange: exchange, routingKey: "k"
            )
            let consumer = try await connection.consume(queue: queue, prefetch: 10)
            for try await delivery in consumer {
                delivery.nack(requeue: false)
                break
            }
            consumer.cancel()

            let dead = try await connection.consume(queue: deadQueue, prefetch: 10)
            for try await delivery in dead {
                #expect(delivery.bodyString == "poison")
                #expect(delivery.properties.messageID == "p1")
                #expect(delivery.properties.headers["attempt"]?.intValue == 3)
                guard case .array(let deaths)? = delivery.properties.headers["x-death"],
                    case .table(let death)? = deaths.first
                else {
                    Issue.record("no x-death header")
                    break
                }
                #expect(death["reason"]?.stringValue == "rejected")
                #expect(death["queue"]?.stringValue == queue)
                delivery.ack()
                break
            }
            dead.cancel()
        }
        try await connection.deleteQueue(deadQueue)
        try await connection.deleteExchange(deadExchange)
        await connection.close()
    }

    @Test("queue arguments: message TTL dead-letters expired messages; max priority delivers urgent first")
    func queueArguments() async throws {
        let connection = try await connect()
        let expired = TestServers.uniqueName("test.expired")
        try await connection.declare(AMQPTopology(queues: [AMQPQueue(name: expired)]))
        // A delay queue: messages wait out the TTL, then go to the default exchange with the given routing key.
        try await withQueue(
            connection,
            queue: { AMQPQueue(name: $0, deadLetterExchange: "", deadLetterRoutingKey: expired, messageTTL: 200) }
        ) { exchange, queue in
            try await connection.publishConfirmed(AMQPMessage(string: "later"), exchange: exchange, routingKey: "k")
            #expect(await eventually { (try? await connection.inspectQueue(expired).messageCount) == 1 })
            #expect(try await connection.inspectQueue(queue).messageCount == 0)
        }
        try await connection.deleteQueue(expired)

        try await withQueue(connection, queue: { AMQPQueue(name: $0, maxPriority: 9) }) { exchange, queue in
            for (body, priority) in [("normal-1", 0), ("normal-2", 0), ("urgent", 9)] {
                try await connection.publish(
                    AMQPMessage(string: body, properties: AMQPProperties(priority: UInt8(priority))),
                    exchange: exchange, routingKey: "k"
                )
            }
            try await connection.waitForConfirms()
            let consumer = try await connection.consume(queue: queue, prefetch: 1)
            var order: [String] = []
            for try await delivery in consumer {
                order.append(delivery.bodyString)
                delivery.ack()
                if order.count == 3 { break }
            }
            consumer.cancel()
            #expect(order == ["urgent", "normal-1", "normal-2"])
        }
        await connection.close()
    }

    @Test("several consumers in one process share a queue and each settles its own deliveries")
    func severalConsumers() async throws {
        let connection = try await connect()
        try await withQueue(connection) { exchange, queue in
            let total = 2_000
            for i in 0..<total {
                try await connection.publish(AMQPMessage(string: "\(i)"), exchange: exchange, routingKey: "k")
            }
            try await connection.waitForConfirms()
            let seen = SeenBodies()
            var consumers: [AMQPConsumer] = []
            var tasks: [Task<Void, any Error>] = []
            for c in 0..<3 {
                let consumer = try await connection.consume(queue: queue, prefetch: 20)
                consumers.append(consumer)
                tasks.append(
                    Task {
                        for try await delivery in consumer {
                            seen.bodies.withLock { $0[c, default: []].append(delivery.bodyString) }
                            delivery.ack()
                        }
                    })
            }
            let all = await eventually(timeout: .seconds(30)) {
                seen.bodies.withLock { $0.values.reduce(0) { $0 + $1.count } } >= total
            }
            #expect(all)
            for consumer in consumers { consumer.cancel() }
            for task in tasks { try await task.value }
            let perConsumer = seen.bodies.withLock { state in (0..<3).map { state[$0]?.count ?? 0 } }
            let union = seen.bodies.withLock { Set($0.values.flatMap { $0 }) }
            let counts = (union.count, perConsumer)
            #expect(counts.0 == total)
            #expect(counts.1.count == 3)
            #expect(counts.1.allSatisfy { $0 > 0 }, "every consumer got a share: \(counts.1)")
            #expect(counts.1.reduce(0, +) == total, "no delivery seen twice")
        }
        await connection.close()
    }

    @Test("a wrong password fails fast with an authentication error")
    func wrongPassword() async throws {
        let start = ContinuousClock.now
        await #expect {
            _ = try await connect { $0.password = "not-the-password" }
        } throws: { error in
            (error as? AMQPError)?.code == .authenticationFailed
        }
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    @Test("an unreachable host fails fast with a connection error naming it")
    func unreachableHost() async throws {
        let start = ContinuousClock.now
        await #expect {
            _ = try await AMQPConnection.connect(
                AMQPConfiguration(host: "127.0.0.1", port: 1, connectTimeout: 2), logger: logger
            )
        } throws: { error in
            guard let error = error as? AMQPError else { return false }
            return error.code == .connectionFailed && String(reflecting: error).contains("127.0.0.1:1")
        }
        #expect(ContinuousClock.now - start < .seconds(3))
    }

    @Test("an invalid URL is refused")
    func invalidURL() {
        #expect(throws: AMQPError.self) { try AMQPConfiguration(url: "http://localhost") }
        let parsed = try? AMQPConfiguration(url: "amqp://u%40x:p%2Fw@broker.example:5700/%2F?heartbeat=10")
        #expect(parsed?.user == "u@x")
        #expect(parsed?.password == "p/w")
        #expect(parsed?.port == 5700)
        #expect(parsed?.virtualHost == "/")
        #expect(parsed?.heartbeat == 10)
        #expect((try? AMQPConfiguration(url: "amqp://h/vh"))?.virtualHost == "vh")
    }
}

private final class SeenBodies: Sendable {
    let bodies = Mutex<[Int: [String]]>([:])
}

/// Keeps the messages logged, to find warnings in them.
private final class CapturedLog: LogHandler, @unchecked Sendable {
    let lock = NSLock()
    var messages: [String] = []
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        lock.withLock { messages.append("\(event.message)") }
    }

    /// A logger whose messages this keeps.
    var logger: Logger { Logger(label: "test.rpc") { _ in self } }

    /// The messages kept that contain any of `needles`.
    func lines(containing needles: String...) -> [String] {
        lock.withLock { messages.filter { message in needles.contains { message.contains($0) } } }
    }
}

/// Timing: a 1 s heartbeat, measured alone (scripts/test runs suites named `…TimingTests` after the others, one at
/// a time): with the rest of the suite starting its services on the two cores, the broker can take longer than
/// the idle watch allows to answer.
@Suite("A connection that only does RPCs")
struct RPCOnlyConnectionTimingTests {
    @Test("passive declares every 100 ms with a 1 s heartbeat: the idle watch sees the answers, the connection stays")
    func rpcsKeepItAlive() async throws {
        let log = CapturedLog()
        let connection = try await connect(logger: log.logger) { $0.heartbeat = 1 }
        let queue = TestServers.uniqueName("test.rpc")
        try await connection.declare(AMQPTopology(queues: [AMQPQueue(name: queue, durable: false, autoDelete: true)]))
        for _ in 0..<60 {
            _ = try? await connection.inspectQueue(queue)
            try await Task.sleep(for: .milliseconds(100))
        }
        let lost = log.lines(containing: "connection lost")
        #expect(lost.isEmpty, "\(lost)")
        try await connection.deleteQueue(queue)
        await connection.close()
    }
}

/// Timing: the worker corks its socket over a run of publishes and acks; an RPC among them must not wait for the
/// kernel's cork timeout (200 ms) to be sent.
@Suite("Bursts of publishes with RPCs among them")
struct CorkedBurstTimingTests {
    @Test(
        "20 bursts of 50 publishes, each followed at once by a passive declare: in order, none held back",
        .timeLimit(.minutes(1))
    )
    func rpcsAmongBursts() async throws {
        let connection = try await connect()
        try await withQueue(connection) { exchange, queue in
            let bursts = 20
            let size = 50
            let clock = ContinuousClock()
            var slowest = Duration.zero
            let started = clock.now
            for burst in 0..<bursts {
                for i in 0..<size {
                    let index = burst * size + i
                    try await connection.publish(
                        AMQPMessage(string: "\(index)", properties: AMQPProperties(messageID: "m-\(index)")),
                        exchange: exchange, routingKey: "k"
                    )
                }
                let asked = clock.now
                _ = try await connection.inspectQueue(queue)
                slowest = max(slowest, clock.now - asked)
            }
            let elapsed = clock.now - started
            try await connection.waitForConfirms()
            // Held back by the cork, each declare would take 200 ms or more: 4 s in all.
            #expect(elapsed < .seconds(2), "20 bursts took \(elapsed), the slowest declare \(slowest)")
            #expect(try await connection.inspectQueue(queue).messageCount == bursts * size)

            let consumer = try await connection.consume(queue: queue, prefetch: 200)
            var next = 0
            for try await delivery in consumer {
                #expect(delivery.bodyString == "\(next)")
                delivery.ack()
                next += 1
                if next == bursts * size { break }
            }
            consumer.cancel()
            #expect(next == bursts * size)
        }
        await connection.close()
    }
}

@Suite("Channel errors on the control channel")
struct ControlChannelErrorTests {
    @Test("several channel errors within one operation on the control channel: each is reported, the connection stays")
    func channelErrorsWithinOneOperation() async throws {
        let log = CapturedLog()
        let connection = try await connect(logger: log.logger)
        let queue = TestServers.uniqueName("test.rpc")
        let missing = TestServers.uniqueName("test.missing")
        try await connection.declare(AMQPTopology(queues: [AMQPQueue(name: queue)]))
        try await connection.publishConfirmed(AMQPMessage(string: "kept"), exchange: "", routingKey: queue)
        // What the queue replacement can meet when a message arrives between its inspection and its delete: one
        // refusal after another on the same channel, in the same call on the connection's thread.
        let (codes, count) = try await connection.perform { worker -> ([Int?], Int) in
            var codes: [Int?] = []
            for _ in 0..<3 {
                do {
                    _ = try worker.inspectQueue(missing)
                    codes.append(nil)
                } catch let error as AMQPError {
                    codes.append(error.replyCode)
                }
            }
            do {
                try worker.deleteQueueIfEmptyAndUnused(queue)
                codes.append(nil)
            } catch let error as AMQPError {
                codes.append(error.replyCode)
            }
            return (codes, try worker.inspectQueue(queue).messageCount)
        }
        #expect(codes == [404, 404, 404, 406])
        #expect(count == 1)
        #expect(connection.isConnected)
        try await connection.publishConfirmed(AMQPMessage(string: "after"), exchange: "", routingKey: queue)
        #expect(try await connection.inspectQueue(queue).messageCount == 2)
        let lost = log.lines(containing: "connection lost", "re-established")
        #expect(lost.isEmpty, "\(lost)")
        try await connection.deleteQueue(queue)
        await connection.close()
    }
}
