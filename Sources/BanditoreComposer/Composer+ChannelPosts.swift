import BanditoreAMQP
import BanditoreChannels
import BanditoreCore
import BanditorePostgres
import BanditoreRuntime
import BanditoreStore
import Foundation
import Logging

extension Composer {
    /// Posts the bulletin to the Telegram public channels configured for it, once per channel and language: the
    /// posts are written as deliveries without a subscriber (in a transaction that first updates the bulletin
    /// while it is `sending`, as the audience's blocks do, so that a cancel sees them or prevents them), then the
    /// jobs of those still queued are published and confirmed; after a crash they are published again, and the
    /// dispatchers skip a post already sent. Returns false when the bulletin is no longer `sending`.
    func postToChannels(
        _ bulletin: StoredBulletin, messages: [Language: RenderedMessage], logger: Logger
    ) async throws -> Bool {
        let content = bulletin.content
        guard content.channels.contains(.telegram), !messages.isEmpty else { return true }
        var targets: [(chat: String, language: Language)] = []
        for post in configuration.channelPosts
        where post.matches(topics: content.topics, urgent: content.urgency == .urgent)
            && !targets.contains(where: { $0.chat == post.chat && $0.language == post.language })
        {
            targets.append((post.chat, post.language))
        }
        guard !targets.isEmpty else { return true }
        let id = bulletin.id
        let queued: [Recipient]? = try await database.withTransaction { connection in
            let sending = try await connection.query(
                "UPDATE bulletins SET updated_at = now() WHERE id = \(id) AND state = 'sending' RETURNING id"
            ).rows
            guard !sending.isEmpty else { return nil }
            // Written before the audience's first block only, so that their ids stay out of its range; after a
            // crash, those written are published again below.
            for target in targets where bulletin.deliveryIDs == nil {
                try await connection.query(
                    """
                    WITH post AS (
                        INSERT INTO deliveries (bulletin_id, subscriber_id, channel)
                        SELECT \(id), NULL, 'telegram'
                         WHERE NOT EXISTS (
                               SELECT 1 FROM channel_posts
                                WHERE bulletin_id = \(id) AND chat = \(target.chat) AND language = \(target.language.rawValue))
                        RETURNING id
                    )
                    INSERT INTO channel_posts (bulletin_id, chat, language, delivery_id)
                    SELECT \(id), \(target.chat), \(target.language.rawValue), id FROM post
                    """
                )
            }
            return try await connection.query(
                """
                SELECT p.delivery_id, p.chat, p.language
                  FROM channel_posts p JOIN deliveries d ON d.id = p.delivery_id
                 WHERE p.bulletin_id = \(id) AND d.state = 'queued'
                 ORDER BY p.delivery_id
                """
            ).rows.map { row in
                let (deliveryID, chat, language) = try row.decode(Int64.self, String.self, String.self)
                return Recipient(
                    deliveryID: deliveryID, address: chat, language: Language(rawValue: language) ?? .italian)
            }
        }
        guard let queued else { return false }
        for recipient in queued {
            // Each post in the channel's language (Italian when the bulletin lacks it, as for subscribers).
            guard let message = messages[recipient.language] ?? messages[.italian] else { continue }
            try await publishJob(
                of: bulletin, channel: .telegram, messages: [recipient.language: message], recipients: [recipient],
                on: amqp
            )
        }
        if !queued.isEmpty {
            try await amqp.waitForConfirms()
            logger.info(
                "bulletin posted to Telegram channels",
                metadata: ["posts": "\(queued.count)", "channels": "\(queued.map(\.address).joined(separator: " "))"]
            )
        }
        return true
    }
}
