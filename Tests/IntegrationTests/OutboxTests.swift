import BanditoreAMQP
import BanditorePostgres
import BanditoreRuntime
import BanditoreStore
import BanditoreTesting
import Foundation
import Logging
import Testing

/// The outbox relay against a real broker and database.
@Suite("Outbox relay")
struct OutboxTests {
    struct Payload: Codable {
        var round: Int
        var index: Int
    }

    @Test("a publish after the commit and the sweep never publish one row both, however late the publish comes")
    func publishAndSweepDoNotRace() async throws {
        let servers = try await IsolatedServers.make("it_outbox")
        let logger = Logger(label: "test.outbox")
        let database = try PostgresClient(url: servers.databaseURL, logger: logger)
        _ = try await Migrator(logger: logger).migrate(database)
        let amqp = try await AMQPConnection.connect(url: servers.amqpURL, logger: logger)
        let queue = "outbox.test"
        try await amqp.declare(AMQPTopology(queues: [AMQPQueue(name: queue)]))
        // The sweep is only called by hand here; it takes rows older than 5 s.
        let relay = OutboxRelay(
            amqp: amqp, database: database, logger: logger, sweepInterval: .seconds(3600), sweepAge: .seconds(5)
        )
        let rounds = 10
        let perRound = 40
        var swept = 0
        for round in 0..<rounds {
            let rows = try await database.withTransaction { connection in
                var rows: [OutboxMessage] = []
                for index in 0..<perRound {
                    rows.append(
                        try await Outbox.add(
                            encoding: Payload(round: round, index: index), type: "test.payload",
                            messageID: "outbox-test-\(round)-\(index)", exchange: "", routingKey: queue, on: connection
                        )
                    )
                }
                return rows
            }
            // As if the publish after the commit came late (a loaded machine): the rows look left behind.
            try await database.query(
                "UPDATE outbox SET created_at = now() - interval '1 minute' WHERE id = ANY(\(rows.map(\.id)))"
            )
            async let published: Void = relay.publishCommitted(chains: rows.map { [$0] })
            async let sweep = relay.sweep()
            try await published
            swept += try await sweep
        }
        let total = rounds * perRound
        let arrived = await eventually(timeout: .seconds(10)) {
            (try? await amqp.inspectQueue(queue).messageCount) == total
        }
        try await Task.sleep(for: .milliseconds(500))
        #expect(arrived)
        #expect(try await amqp.inspectQueue(queue).messageCount == total, "each row published once")
        let unpublished = try await database.query("SELECT count(*) FROM outbox WHERE published_at IS NULL").rows[0]
            .decode(Int.self, at: 0)
        #expect(unpublished == 0)
        logger.info("rows the sweep took: \(swept) of \(total)")
        await amqp.close()
        await database.close()
    }
}
