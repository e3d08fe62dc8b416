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
        let database = try await servers.migratedDatabase(logger: logger)
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

    @Test("published rows are deleted after the retention, unpublished ones never, in batches")
    func retention() async throws {
        let servers = try await IsolatedServers.make("it_outbox_retention")
        let logger = Logger(label: "test.outbox")
        let database = try await servers.migratedDatabase(logger: logger)
        let amqp = try await AMQPConnection.connect(url: servers.amqpURL, logger: logger)
        let relay = OutboxRelay(
            amqp: amqp, database: database, logger: logger, sweepInterval: .seconds(3600),
            retention: .seconds(24 * 3600)
        )
        let rows = try await database.withTransaction { connection in
            var rows: [OutboxMessage] = []
            for index in 0..<10 {
                rows.append(
                    try await Outbox.add(
                        encoding: Payload(round: 0, index: index), type: "test.payload",
                        messageID: "outbox-retention-\(index)", exchange: "", routingKey: "nowhere", on: connection
                    )
                )
            }
            return rows
        }
        let ids = rows.map(\.id)
        // 0–4 published two days ago, 5–6 an hour ago, 7 never published though two days old, 8–9 just written.
        try await database.query(
            "UPDATE outbox SET created_at = now() - interval '2 days', published_at = now() - interval '47 hours' WHERE id = ANY(\(Array(ids[0..<5])))"
        )
        try await database.query(
            "UPDATE outbox SET published_at = now() - interval '1 hour' WHERE id = ANY(\(Array(ids[5..<7])))"
        )
        try await database.query("UPDATE outbox SET created_at = now() - interval '2 days' WHERE id = \(ids[7])")
        #expect(try await relay.prune(batch: 2) == 5)
        let left = try await database.query("SELECT id FROM outbox ORDER BY id").rows.map {
            try $0.decode(Int64.self, at: 0)
        }
        #expect(left == Array(ids[5...]))
        #expect(try await relay.prune() == 0)
        await amqp.close()
        await database.close()
    }

    @Test("messages added in one statement come back in order, each body intact; an id already there keeps its row")
    func addMany() async throws {
        let servers = try await IsolatedServers.make("it_outbox_many")
        let logger = Logger(label: "test.outbox")
        let database = try await servers.migratedDatabase(logger: logger)
        let before = try await database.withTransaction { connection in
            try await Outbox.add(
                encoding: Payload(round: 0, index: 0), type: "test.payload", messageID: "many-b", exchange: "x",
                routingKey: "k", on: connection
            )
        }
        func entry(_ index: Int, _ id: String) throws -> Outbox.Entry {
            try Outbox.Entry(
                encoding: Payload(round: 1, index: index), type: "test.payload", messageID: id, exchange: "ex\\\"{}",
                routingKey: "key \(index)"
            )
        }
        let entries = try [entry(1, "many-a"), entry(2, "many-b"), entry(3, "many-c"), entry(4, "many-a")]
        let rows = try await database.withTransaction { try await Outbox.add(entries, on: $0) }
        #expect(rows.map(\.message.properties.messageID) == ["many-a", "many-b", "many-c", "many-a"])
        #expect(rows[1].id == before.id)
        #expect(rows[0].id == rows[3].id)
        #expect(Set(rows.map(\.id)).count == 3)
        let stored = try await database.query(
            "SELECT message_id, exchange, routing_key, body FROM outbox ORDER BY id"
        ).rows.map { try $0.decode(String.self, String.self, String.self, SQLBytes.self) }
        #expect(stored.map(\.0) == ["many-b", "many-a", "many-c"])
        #expect(stored[1].1 == "ex\\\"{}" && stored[1].2 == "key 1")
        // The row already there kept its first body; the new ones hold what was encoded.
        #expect(try JSONDecoder().decode(Payload.self, from: Data(stored[0].3.bytes)).round == 0)
        #expect(try JSONDecoder().decode(Payload.self, from: Data(stored[1].3.bytes)).index == 1)
        #expect(stored[2].3.bytes == rows[2].message.body)
        await database.close()
    }
}
