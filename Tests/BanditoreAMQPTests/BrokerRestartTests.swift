import BanditoreAMQP
import BanditoreTesting
import Foundation
import Logging
import Testing

/// Restarts a broker of its own (see ``PrivateServer``), so that the other tests are not disturbed.
@Suite("AMQP across a broker restart", .serialized)
struct BrokerRestartTests {
    @Test("consuming resumes after a broker restart without losing a message; unconfirmed publishes fail clearly")
    func restartMidConsume() async throws {
        try await PrivateServer.with(.rabbitmq, portBase: 5790) { try await restartMidConsume($0) }
    }

    private func restartMidConsume(_ broker: PrivateServer) async throws {
        var configuration = try AMQPConfiguration(url: broker.url)
        configuration.reconnectBackoff = (initial: 0.1, maximum: 1)
        let logger = Logger(label: "test.amqp.restart")
        let connection = try await AMQPConnection.connect(configuration, logger: logger)

        let queue = "restart.q"
        try await connection.declare(AMQPTopology(queues: [AMQPQueue(name: queue)]))
        let total = 3_000
        for i in 0..<total {
            try await connection.publish(
                AMQPMessage(string: "\(i)", properties: AMQPProperties(messageID: "\(i)")), exchange: "",
                routingKey: queue
            )
        }
        try await connection.waitForConfirms()

        let consumer = try await connection.consume(queue: queue, prefetch: 50)
        var acked = Set<Int>()
        var redelivered = 0
        var restarted = false
        for try await delivery in consumer {
            let index = Int(delivery.bodyString)!
            if delivery.redelivered { redelivered += 1 }
            if acked.count == 1_000, !restarted {
                // Mid-consume: this delivery and the prefetched ones are unacknowledged when the broker goes.
                restarted = true
                try await broker.stop()
                #expect(await eventually(timeout: .seconds(15)) { !connection.isConnected })
                // While it is down, a publish fails at once rather than vanishing.
                await #expect {
                    try await connection.publishConfirmed(AMQPMessage(string: "x"), exchange: "", routingKey: queue)
                } throws: { error in
                    [.notConnected, .connectionLost].contains((error as? AMQPError)?.code)
                }
                try await broker.start()
                continue  // not acked: it must come again
            }
            delivery.ack()
            acked.insert(index)
            if acked.count == total { break }
        }
        consumer.cancel()
        #expect(restarted)
        #expect(acked.count == total, "every message consumed after the restart")
        #expect(redelivered > 0, "unacknowledged deliveries came again, marked redelivered")
        // Acks sent just before the broker stopped may not have reached it: those messages come again (at least
        // once), bounded by what was unacknowledged then: the prefetch window.
        let leftover = try await connection.inspectQueue(queue).messageCount
        #expect(leftover <= 50, "duplicates bounded by the prefetch: \(leftover)")
        try await connection.purgeQueue(queue)
        // Declared topology is back and publishing works again.
        try await connection.publishConfirmed(AMQPMessage(string: "after"), exchange: "", routingKey: queue)
        #expect(try await connection.inspectQueue(queue).messageCount == 1)
        await connection.close()
    }
}
