import BanditorePostgres
import BanditoreStore
import BanditoreTesting
import Foundation
import Logging
import Testing

/// Migration 0009 classifies the deliveries that failed before it from their text, as the dispatcher used to.
@Suite("Deliveries failed before the failure columns")
struct FailureMigrationTests {
    let logger = Logger(label: "test.store.migration")

    @Test("each earlier failure gets its kind and code from its text, once")
    func backfill() async throws {
        let servers = try await IsolatedServers.make("it_failure_migration")
        let client = try DatabasePool(url: servers.databaseURL, logger: logger)
        let all = try Migrator.bundled()
        _ = try await Migrator(migrations: all.filter { $0.version <= 8 }, logger: logger).migrate(client)
        let bulletin = UUID()
        try await client.query(
            """
            INSERT INTO bulletins (id, title, body, topics, channels, urgency, state)
            VALUES (\(bulletin), 'T', '{"it": "x"}', '{}', '{telegram}', 'normal', 'sent')
            """
        )
        let failures: [(channel: String, error: String?, state: String)] = [
            ("telegram", "403: Forbidden: bot was blocked by the user", "failed"),
            ("telegram", "400: Bad Request: chat not found", "failed"),
            ("telegram", "400: Bad Request: message is too long", "failed"),
            ("whatsapp", "131026: Message undeliverable", "failed"),
            ("whatsapp", "131026 Message undeliverable", "failed"),  // a provider's report: no colon
            ("wechat", "43004: require subscribe", "failed"),
            ("wechat", "gave up after 6 attempts: transient: 500", "failed"),
            ("wechat", nil, "sent"),
        ]
        for (index, failure) in failures.enumerated() {
            try await client.query(
                """
                INSERT INTO deliveries (id, bulletin_id, channel, state, last_error)
                VALUES (\(Int64(index + 1)), \(bulletin), \(failure.channel), \(failure.state), \(failure.error))
                """
            )
        }
        _ = try await Migrator(logger: logger).migrate(client)
        let rows = try await client.query("SELECT id, failure_kind, failure_code FROM deliveries ORDER BY id").rows.map
        {
            try $0.decode(Int64.self, String?.self, String?.self)
        }
        let found = rows.map { "\($0.1 ?? "-") \($0.2 ?? "-")" }
        #expect(
            found == [
                "unreachable 403", "unreachable 400", "permanent 400", "unreachable 131026", "- -", "unreachable 43004",
                "gave_up -", "- -",
            ])
        await client.close()
    }
}
