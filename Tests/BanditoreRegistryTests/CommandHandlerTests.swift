import BanditoreCore
import BanditorePostgres
import BanditoreRuntime
import BanditoreStore
import BanditoreTesting
import Foundation
import Logging
import Testing

@testable import BanditoreRegistry

/// The registry's effects on a real PostgreSQL, one database per test.
@Suite("Registry commands on PostgreSQL")
struct CommandHandlerTests {
    let logger = Logger(label: "test.registry")
    let handler = CommandHandler(topics: TopicCatalogue())

    func database(_ name: String) async throws -> DatabasePool {
        try await IsolatedServers.make(name).migratedDatabase(logger: logger)
    }

    /// What a command did, with its reply decoded from the outbox message.
    struct Applied {
        var duplicate: Bool
        var outbox: OutboxMessage?
        var reply: DeliveryJob?
    }

    func run(_ command: CitizenCommand, _ database: DatabasePool) async throws -> Applied {
        let outcome = try await database.withTransaction { try await handler.apply(command, on: $0) }
        return Applied(
            duplicate: outcome.duplicate, outbox: outcome.reply,
            reply: try outcome.reply.map { try JSONDecoder().decode(DeliveryJob.self, from: Data($0.message.body)) }
        )
    }

    struct Row: Equatable {
        var active: Bool
        var language: String
        var reason: String?
        var left: Bool
        var topics: [String]
    }

    func row(_ channel: Channel, _ address: String, _ database: DatabasePool) async throws -> Row? {
        guard
            let row = try await database.query(
                """
                SELECT active, language, inactive_reason, unsubscribed_at IS NOT NULL,
                       coalesce((SELECT array_agg(topic ORDER BY topic) FROM subscriber_topics WHERE subscriber_id = s.id), '{}')
                FROM subscribers s WHERE channel = \(channel.rawValue) AND address = \(address)
                """
            ).first
        else { return nil }
        let (active, language, reason, left, topics) = try row.decode(
            Bool.self, String.self, String?.self, Bool.self, [String].self
        )
        return Row(active: active, language: language, reason: reason, left: left, topics: topics)
    }

    static let allTopics = ["disservizi", "eventi", "farmacie", "protezione-civile", "scadenze", "scuola"]

    @Test("subscribe, follow, language, leave and come back: each step in the database and answered")
    func lifecycle() async throws {
        let db = try await database("it_registry_life")
        let address = "393470000001"
        func command(_ kind: CitizenCommand.Kind, key: String, topic: String? = nil, language: Language? = nil)
            -> CitizenCommand
        {
            CitizenCommand(
                channel: .whatsapp, address: address, kind: kind, dedupeKey: key, topic: topic, language: language)
        }

        var outcome = try await run(command(.subscribe, key: "wamid.1"), db)
        #expect(
            try await row(.whatsapp, address, db)
                == Row(active: true, language: "it", left: false, topics: Self.allTopics))
        let reply = try #require(outcome.reply)
        #expect(reply.recipients.map(\.address) == [address])
        #expect(reply.message(for: .italian)?.text?.hasPrefix("Iscrizione attivata.") == true)
        let outbox = try #require(outcome.outbox)
        #expect(outbox.message.properties.messageID == reply.id)
        #expect(outbox.message.properties.type == DeliveryJob.messageType)
        let stored = try await db.query(
            "SELECT message_id, routing_key, body FROM outbox WHERE id = \(outbox.id)"
        ).rows[0].decode(String.self, String.self, SQLBytes.self)
        #expect(stored.0 == reply.id)
        #expect(stored.1 == "whatsapp.replies", "replies go to the channel's replies queue")
        #expect(try JSONDecoder().decode(DeliveryJob.self, from: Data(stored.2.bytes)) == reply)

        // The provider retries the same message: no second effect, no second reply.
        outcome = try await run(command(.subscribe, key: "wamid.1"), db)
        #expect(outcome.duplicate)
        #expect(outcome.reply == nil)

        outcome = try await run(command(.unfollow, key: "wamid.2", topic: "Eventi"), db)
        #expect(outcome.reply?.message(for: .italian)?.text == "Non segui più: Eventi.")
        outcome = try await run(command(.unfollow, key: "wamid.3", topic: "farmacia"), db)
        #expect(outcome.reply?.message(for: .italian)?.text?.hasPrefix("Argomento sconosciuto: farmacia.") == true)
        outcome = try await run(command(.setLanguage, key: "wamid.4", language: .english), db)
        #expect(outcome.reply?.recipients.first?.language == .english)
        #expect(outcome.reply?.message(for: .english)?.text == "Language set: English.")
        var expected = Row(active: true, language: "en", left: false, topics: Self.allTopics.filter { $0 != "eventi" })
        #expect(try await row(.whatsapp, address, db) == expected)

        outcome = try await run(command(.unsubscribe, key: "wamid.5"), db)
        #expect(outcome.reply?.message(for: .english)?.text?.hasPrefix("You are unsubscribed") == true)
        expected.active = false
        expected.reason = "command"
        expected.left = true
        #expect(try await row(.whatsapp, address, db) == expected)

        // Follow while away: refused, nothing changes.
        outcome = try await run(command(.follow, key: "wamid.6", topic: "eventi"), db)
        #expect(outcome.reply?.message(for: .english)?.text?.hasPrefix("You are not subscribed") == true)
        #expect(try await row(.whatsapp, address, db) == expected)

        // Back, with the old preferences.
        outcome = try await run(command(.subscribe, key: "wamid.7"), db)
        #expect(outcome.reply?.message(for: .english)?.text?.hasPrefix("Welcome back!") == true)
        expected = Row(active: true, language: "en", left: false, topics: Self.allTopics.filter { $0 != "eventi" })
        #expect(try await row(.whatsapp, address, db) == expected)
        await db.close()
    }

    @Test("a batch read ahead in three statements, replies written in one, does what its commands do one by one")
    func batchReadAhead() async throws {
        let db = try await database("it_registry_batch")
        func command(_ address: String, _ kind: CitizenCommand.Kind, key: String, language: Language? = nil)
            -> CitizenCommand
        {
            CitizenCommand(channel: .whatsapp, address: address, kind: kind, dedupeKey: key, language: language)
        }
        // B subscribed and left; E's message id is already recorded.
        _ = try await run(command("39300000002", .subscribe, key: "b-1"), db)
        _ = try await run(command("39300000002", .unsubscribe, key: "b-2"), db)
        _ = try await run(command("39300000005", .subscribe, key: "e-1"), db)

        let batch = [
            command("39300000001", .subscribe, key: "a-1"),  // new
            command("39300000001", .setLanguage, key: "a-2", language: .english),  // must see A created
            command("39300000002", .subscribe, key: "b-3"),  // comes back
            command("39300000003", .subscribe, key: "b-3"),  // the same message id again: a retry
            command("39300000004", .subscribe, key: "e-1"),  // an id recorded before
            CitizenCommand(channel: .whatsapp, address: "39300000006", kind: .ignored),
            // New too: one topic, in the language the provider reports; and one written in Chinese.
            CitizenCommand(
                channel: .telegram, address: "7001", kind: .subscribe, dedupeKey: "t-1", topic: "scuola",
                reportedLanguage: .english
            ),
            {
                var command = CitizenCommand(channel: .wechat, address: "oWX-7", kind: .subscribe, dedupeKey: "w-1")
                command.writtenIn = .chinese
                return command
            }(),
            // A citizen whose first command is not a subscription: created by the later one, as one by one.
            command("39300000008", .help, key: "h-1"),
            command("39300000008", .subscribe, key: "h-2"),
        ]
        let (taken, outcomes) = try await db.withTransaction { connection in
            let prefetched = try await handler.prefetch(batch, on: connection)
            var outcomes: [CommandHandler.Outcome] = []
            for (index, command) in batch.enumerated() {
                outcomes.append(try await handler.apply(command, on: connection, prefetched: prefetched[index]))
            }
            try await handler.addReplies(&outcomes, on: connection)
            return (prefetched, outcomes)
        }
        // A citizen's first command only, a message id's first command only, nothing for what changes nothing.
        #expect(Set(taken.keys) == [0, 2, 4, 6, 7, 8])
        // New citizens who subscribe are created by the read-ahead, in one statement.
        #expect(taken[0]?.fresh == true && taken[0]?.created == true && taken[0]?.subscriber?.active == true)
        #expect(taken[2]?.fresh == true && taken[2]?.created == false && taken[2]?.subscriber?.active == false)
        #expect(taken[4]?.fresh == false && taken[4]?.subscriber == nil && taken[4]?.created == false)
        #expect(taken[6]?.created == true && taken[7]?.created == true)
        #expect(taken[8]?.created == false && taken[8]?.subscriber == nil)

        func text(_ index: Int) throws -> String? {
            guard let reply = outcomes[index].reply else { return nil }
            let job = try JSONDecoder().decode(DeliveryJob.self, from: Data(reply.message.body))
            return job.message(for: job.recipients[0].language)?.text
        }
        #expect(try text(0)?.hasPrefix("Iscrizione attivata.") == true)
        #expect(try text(1) == "Language set: English.")
        #expect(try text(2)?.hasPrefix("Bentornato") == true)
        #expect(try text(6)?.hasPrefix("You are subscribed.") == true)
        #expect(try text(7)?.hasPrefix("订阅成功。") == true)
        #expect(try text(9)?.hasPrefix("Iscrizione attivata.") == true)
        #expect(outcomes.map(\.duplicate) == [false, false, false, true, true, false, false, false, false, false])
        #expect(outcomes[3].reply == nil && outcomes[4].reply == nil && outcomes[5].reply == nil)
        // Each reply is addressed to its citizen's row.
        for index in [0, 6, 7, 9] {
            let reply = try #require(outcomes[index].reply)
            let job = try JSONDecoder().decode(DeliveryJob.self, from: Data(reply.message.body))
            let id = try #require(job.recipients[0].subscriberID)
            let owner = try await db.query("SELECT address FROM subscribers WHERE id = \(id)").first?.decode(
                String.self, at: 0)
            #expect(owner == batch[index].address)
        }
        #expect(
            try await row(.telegram, "7001", db) == Row(active: true, language: "en", left: false, topics: ["scuola"])
        )
        #expect(
            try await row(.wechat, "oWX-7", db)
                == Row(active: true, language: "zh", left: false, topics: Self.allTopics)
        )
        #expect(
            try await row(.whatsapp, "39300000008", db)
                == Row(active: true, language: "it", left: false, topics: Self.allTopics)
        )
        #expect(
            try await row(.whatsapp, "39300000001", db)
                == Row(active: true, language: "en", left: false, topics: Self.allTopics)
        )
        #expect(try await row(.whatsapp, "39300000002", db)?.active == true)
        #expect(try await row(.whatsapp, "39300000003", db) == nil)
        #expect(try await row(.whatsapp, "39300000004", db) == nil)
        await db.close()
    }

    @Test("Telegram /start with a topic and a Chinese client: only that topic, in Chinese; blocking leaves silently")
    func telegramStart() async throws {
        let db = try await database("it_registry_tg")
        let outcome = try await run(
            CitizenCommand(
                channel: .telegram, address: "123456789", kind: .subscribe, dedupeKey: "1", topic: "scuola",
                reportedLanguage: .chinese
            ),
            db
        )
        #expect(
            try await row(.telegram, "123456789", db)
                == Row(active: true, language: "zh", left: false, topics: ["scuola"]))
        #expect(outcome.reply?.message(for: .chinese)?.text?.hasPrefix("订阅成功。") == true)
        let blocked = try await run(
            CitizenCommand(
                channel: .telegram, address: "123456789", kind: .unsubscribe, dedupeKey: "2", leaveReason: .blocked),
            db
        )
        #expect(blocked.reply == nil)
        #expect(try await row(.telegram, "123456789", db)?.reason == "blocked")
        #expect(try await row(.telegram, "123456789", db)?.active == false)
        await db.close()
    }

    @Test("a command written in Chinese switches an Italian subscriber to Chinese")
    func chineseText() async throws {
        let db = try await database("it_registry_zh")
        _ = try await run(
            CitizenCommand(channel: .wechat, address: "oW7x0tA", kind: .subscribe, dedupeKey: "a:1:subscribe"), db)
        #expect(try await row(.wechat, "oW7x0tA", db)?.language == "it")
        let outcome = try await run(
            CitizenCommand(
                channel: .wechat, address: "oW7x0tA", kind: .listTopics, dedupeKey: "99", writtenIn: .chinese),
            db
        )
        #expect(try await row(.wechat, "oW7x0tA", db)?.language == "zh")
        #expect(outcome.reply?.message(for: .chinese)?.text?.hasPrefix("主题（✓ = 已关注）：") == true)
        await db.close()
    }

    @Test("delivery reports move a delivery forward only; an undeliverable number is deactivated")
    func reports() async throws {
        let db = try await database("it_registry_reports")
        let addresses = ["393470000011", "393470000012"]
        let recipients = try await DeliveryFixtures.seed(db, channel: .whatsapp, addresses: addresses)
        for (index, recipient) in recipients.enumerated() {
            try await db.query(
                "UPDATE deliveries SET state = 'sent', provider_message_id = \("wamid.OUT\(index)") WHERE id = \(recipient.deliveryID!)"
            )
        }
        func report(_ index: Int, _ status: String, code: Int? = nil) async throws {
            _ = try await run(
                CitizenCommand(
                    channel: .whatsapp, address: addresses[index], kind: .deliveryStatus,
                    report: .init(providerMessageID: "wamid.OUT\(index)", status: status, errorCode: code)
                ),
                db
            )
        }
        func state(_ index: Int) async throws -> String {
            try await db.query("SELECT state FROM deliveries WHERE id = \(recipients[index].deliveryID!)").rows[0]
                .decode(String.self, at: 0)
        }
        try await report(0, "read")
        #expect(try await state(0) == "read")
        try await report(0, "delivered")  // out of order: stays read
        try await report(0, "failed", code: 131000)
        #expect(try await state(0) == "read")
        try await report(1, "failed", code: 131026)
        #expect(try await state(1) == "failed")
        #expect(try await row(.whatsapp, addresses[1], db)?.active == false)
        #expect(try await row(.whatsapp, addresses[1], db)?.reason == "unreachable")
        #expect(try await row(.whatsapp, addresses[0], db)?.active == true)

        // A report that comes before the dispatcher recorded the send is kept, and applied when it is recorded.
        let early = try await DeliveryFixtures.seed(db, channel: .whatsapp, addresses: ["393470000013"])[0]
        _ = try await run(
            CitizenCommand(
                channel: .whatsapp, address: "393470000013", kind: .deliveryStatus,
                report: .init(providerMessageID: "wamid.EARLY", status: "delivered")
            ),
            db
        )
        try await db.query(
            "UPDATE deliveries SET state = 'sent', provider_message_id = 'wamid.EARLY' WHERE id = \(early.deliveryID!)"
        )
        let moved = try await db.withConnection {
            try await DeliveryReports.applyKept(channel: "whatsapp", providerMessageIDs: ["wamid.EARLY"], on: $0)
        }
        #expect(moved == 1)
        #expect(
            try await db.query("SELECT state FROM deliveries WHERE id = \(early.deliveryID!)").rows[0]
                .decode(String.self, at: 0) == "delivered"
        )

        // The dispatcher records the send while the report's transaction is still open: its applyKept cannot see
        // the report, so the outcome names the kept report and applying it after the commit moves the delivery.
        let raced = try await DeliveryFixtures.seed(db, channel: .whatsapp, addresses: ["393470000014"])[0]
        let outcome = try await db.withTransaction { connection in
            let outcome = try await handler.apply(
                CitizenCommand(
                    channel: .whatsapp, address: "393470000014", kind: .deliveryStatus,
                    report: .init(providerMessageID: "wamid.RACE", status: "failed", errorCode: 131049)
                ),
                on: connection
            )
            try await db.query(
                "UPDATE deliveries SET state = 'sent', provider_message_id = 'wamid.RACE' WHERE id = \(raced.deliveryID!)"
            )
            let missed = try await db.withConnection {
                try await DeliveryReports.applyKept(channel: "whatsapp", providerMessageIDs: ["wamid.RACE"], on: $0)
            }
            #expect(missed == 0)
            return outcome
        }
        let kept = try #require(outcome.keptReport)
        #expect(kept.channel == "whatsapp" && kept.providerMessageID == "wamid.RACE")
        let applied = try await db.withConnection {
            try await DeliveryReports.applyKept(
                channel: kept.channel, providerMessageIDs: [kept.providerMessageID], on: $0
            )
        }
        #expect(applied == 1)
        #expect(
            try await db.query("SELECT state, last_error FROM deliveries WHERE id = \(raced.deliveryID!)").rows[0]
                .decode(String.self, String.self) == ("failed", "131049")
        )
        await db.close()
    }

    @Test("kept reports are applied by probing the ids asked for, even on statistics read before any send was recorded")
    func applyKeptProbesIDs() async throws {
        let db = try await database("it_registry_kept_probe")
        let sent = try await DeliveryFixtures.seed(
            db, channel: .whatsapp, addresses: (0..<3_000).map { DeliveryFixtures.address(.whatsapp, $0) }
        )
        let chat = try await DeliveryFixtures.seed(db, channel: .telegram, addresses: ["4242"])[0]
        // Statistics of a bulletin's deliveries as the fan-out leaves them (none sent), then the sends recorded.
        try await db.query("ANALYZE deliveries")
        try await db.query(
            "UPDATE deliveries SET state = 'sent', provider_message_id = 'wamid.' || id WHERE channel = 'whatsapp'")
        try await db.query(
            "UPDATE deliveries SET state = 'sent', provider_message_id = '77' WHERE id = \(chat.deliveryID!)")
        func id(_ i: Int) -> String { "wamid.\(sent[i].deliveryID!)" }
        try await db.query(
            """
            INSERT INTO delivery_reports (channel, provider_message_id, status, rank)
            VALUES ('whatsapp', \(id(5)), 'delivered', 2), ('whatsapp', \(id(2_500)), 'read', 3),
                   ('telegram', '77', 'delivered', 2)
            """
        )
        let (moved, probed) = try await db.withConnection { connection in
            func indexReads() async throws -> Int {
                try await connection.query("SELECT pg_stat_force_next_flush()")
                return try await connection.query(
                    "SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'deliveries_by_provider_id'"
                ).first!.decode(Int.self, at: 0)
            }
            let before = try await indexReads()
            let moved = try await DeliveryReports.applyKept(
                channel: "whatsapp", providerMessageIDs: (0..<300).map(id), on: connection
            )
            return (moved, try await indexReads() - before)
        }
        #expect(moved == 1)
        // One entry per report found (walking the channel's sent deliveries read 3,000).
        #expect(probed <= 300, "index entries read: \(probed)")
        // The registry's sweep applies the rest, on every channel.
        let swept = try await db.withConnection { try await DeliveryReports.applyKeptRecent(on: $0) }
        #expect(swept == 2)
        let states = try await db.query(
            """
            SELECT id, state FROM deliveries WHERE id IN (\(sent[5].deliveryID!), \(sent[2_500].deliveryID!), \(chat.deliveryID!))
             ORDER BY id
            """
        ).rows.map { try $0.decode(Int64.self, String.self) }
        #expect(states.map(\.1) == ["delivered", "read", "delivered"])
        await db.close()
    }

    @Test("providers' message ids are forgotten after the retention, and only those older than it")
    func inboundRetention() async throws {
        let db = try await database("it_registry_inbound_retention")
        for (index, key) in ["wamid.OLD1", "wamid.OLD2", "wamid.OLD3", "wamid.NEW"].enumerated() {
            _ = try await run(
                CitizenCommand(
                    channel: .whatsapp, address: "39347000010\(index)", kind: .subscribe, dedupeKey: key
                ),
                db
            )
        }
        try await db.query(
            "UPDATE inbound_messages SET received_at = now() - interval '9 days' WHERE provider_message_id LIKE 'wamid.OLD%'"
        )
        try await db.query(
            "UPDATE inbound_messages SET received_at = now() - interval '7 days' WHERE provider_message_id = 'wamid.NEW'"
        )
        // Batches of two: the statement runs until one deletes fewer than that.
        let forgotten = try await db.withConnection {
            try await InboundMessages.prune(olderThan: .seconds(8 * 24 * 3600), batch: 2, on: $0)
        }
        #expect(forgotten == 3)
        let left = try await db.query("SELECT provider_message_id FROM inbound_messages ORDER BY 1").rows
            .map { try $0.decode(String.self, at: 0) }
        #expect(left == ["wamid.NEW"])
        // A retry of a message still kept has no second effect; one of a forgotten message is a new command.
        let retried = try await run(
            CitizenCommand(channel: .whatsapp, address: "393470000103", kind: .subscribe, dedupeKey: "wamid.NEW"), db
        )
        #expect(retried.duplicate)
        let late = try await run(
            CitizenCommand(channel: .whatsapp, address: "393470000100", kind: .subscribe, dedupeKey: "wamid.OLD1"), db
        )
        #expect(!late.duplicate)
        await db.close()
    }
}
