import BanditoreCore
import BanditorePostgres
import BanditoreStore
import BanditoreTesting
import Foundation
import Logging
import Testing

/// A bulletin's posts to Telegram public channels as the database keeps them.
@Suite("Channel posts in the database")
struct ChannelPostStoreTests {
    @Test("a cancel marks a queued post cancelled and leaves a sent one; posts stay out of the audience counts")
    func cancel() async throws {
        let servers = try await IsolatedServers.make("it_channel_posts")
        let logger = Logger(label: "test.posts")
        let database = try await servers.migratedDatabase(logger: logger)
        let id = UUID()
        let content = BulletinContent(
            title: "Scuole", body: [.italian: "Mensa chiusa."], topics: ["scuola"], channels: [.telegram],
            urgency: .normal
        )
        _ = try await database.withConnection {
            try await Bulletins.create(
                id: id, content: content, correlationID: "test", idempotencyKey: nil, requestHash: "test", on: $0
            )
        }
        try await database.query("UPDATE bulletins SET state = 'sending' WHERE id = \(id)")
        // As the composer writes them: a delivery without a subscriber, and the post naming it.
        for (chat, state) in [("@scuole_prato", "sent"), ("@scuole_prato_zh", "queued")] {
            try await database.query(
                """
                WITH d AS (
                    INSERT INTO deliveries (bulletin_id, subscriber_id, channel, state)
                    VALUES (\(id), NULL, 'telegram', \(state)) RETURNING id
                )
                INSERT INTO channel_posts (bulletin_id, chat, language, delivery_id)
                SELECT \(id), \(chat), 'it', id FROM d
                """
            )
        }
        let previous = try await database.withTransaction { try await Bulletins.cancel(id, on: $0) }
        #expect(previous == .sending)
        let posts = try await database.withConnection { try await Bulletins.channelPosts(id, on: $0) }
        #expect(
            posts.map { "\($0.chat) \($0.language) \($0.state)" } == [
                "@scuole_prato it sent", "@scuole_prato_zh it cancelled",
            ])
        let progress = try await database.withConnection {
            try await Bulletins.progress(id, channels: [.telegram], on: $0)
        }
        #expect(progress["telegram"] == ChannelProgress(), "the posts are not the audience: \(progress)")
        await database.close()
    }
}
