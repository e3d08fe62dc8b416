import BanditoreCore
import BanditorePostgres
import Foundation

/// A bulletin as stored, with where its fan-out stands.
public struct StoredBulletin: Sendable, Hashable {
    public var id: UUID
    public var content: BulletinContent
    public var state: BulletinState
    public var scheduledFor: Date?
    /// The last delivery id whose job the broker confirmed.
    public var fanoutCursor: Int64
    /// Whether every delivery of the audience is written.
    public var audienceCreated: Bool
    public var correlationID: String
    public var createdAt: Date
    /// The last subscriber id whose delivery is written.
    public var audienceCursor: Int64
    /// The range the bulletin's delivery ids fall in (nil before the first is written).
    public var deliveryIDs: ClosedRange<Int64>?
}

/// Per-channel counts of a bulletin's deliveries.
public struct ChannelProgress: Sendable, Codable, Hashable {
    public var audience = 0
    public var queued = 0
    public var sent = 0
    public var delivered = 0
    public var read = 0
    public var failed = 0
    public var skipped = 0
    public var cancelled = 0

    public init() {}
}

/// A bulletin's post to a Telegram public channel in one language, and how it went.
public struct ChannelPostStatus: Sendable, Codable, Hashable {
    public var chat: String
    public var language: String
    public var state: String
    public var attempts: Int
    public var providerMessageID: String?
    public var lastError: String?

    enum CodingKeys: String, CodingKey {
        case chat, language, state, attempts
        case providerMessageID = "provider_message_id"
        case lastError = "last_error"
    }
}

/// Reading and writing `bulletins`.
public enum Bulletins {
    /// What creating a bulletin did: created it, or found the one an earlier request with the same idempotency key
    /// created (`replayed`), or found that key used for a different request (`conflict`).
    public enum Created: Sendable, Hashable {
        case created(UUID)
        case replayed(UUID)
        case conflict(UUID)
    }

    /// Inserts a bulletin in state `submitted`; with an idempotency key already used, returns the first bulletin
    /// (same request) or a conflict (different request).
    public static func create(
        id: UUID, content: BulletinContent, correlationID: String, idempotencyKey: String?, requestHash: String,
        on connection: DatabaseConnection
    ) async throws -> Created {
        let body = String(decoding: try JSONEncoder().encode(content.body), as: UTF8.self)
        let inserted = try await connection.query(
            """
            INSERT INTO bulletins (id, title, body, topics, channels, urgency, send_at, idempotency_key, request_hash,
                                   correlation_id)
            VALUES (\(id), \(content.title), \(body)::jsonb, \(content.topics)::text[],
                    \(content.channels.map(\.rawValue))::text[], \(content.urgency.rawValue), \(content.sendAt),
                    \(idempotencyKey), \(requestHash), \(correlationID))
            ON CONFLICT (idempotency_key) DO NOTHING
            """
        )
        if inserted.affectedRows == 1 { return .created(id) }
        let row = try await connection.query(
            "SELECT id, request_hash FROM bulletins WHERE idempotency_key = \(idempotencyKey)"
        ).rows[0]
        let (existing, hash) = try row.decode(UUID.self, String?.self)
        return hash == requestHash ? .replayed(existing) : .conflict(existing)
    }

    public static func load(_ id: UUID, on connection: DatabaseConnection, forUpdate: Bool = false)
        async throws -> StoredBulletin?
    {
        let rows = try await connection.query(
            """
            SELECT id, title, body::text, topics, channels, urgency, send_at, state, scheduled_for, fanout_cursor,
                   audience_created_at IS NOT NULL, coalesce(correlation_id, id::text), created_at, audience_cursor,
                   first_delivery_id, last_delivery_id
              FROM bulletins WHERE id = \(id) \(unescaped: forUpdate ? "FOR UPDATE" : "")
            """
        ).rows
        guard let row = rows.first else { return nil }
        let (id, title, body, topics, channels, urgency, sendAt) = try row.decode(
            UUID.self, String.self, String.self, [String].self, [String].self, String.self, Date?.self
        )
        let texts = try JSONDecoder().decode([Language: String].self, from: Data(body.utf8))
        return StoredBulletin(
            id: id,
            content: BulletinContent(
                title: title, body: texts, topics: topics, channels: channels.compactMap(Channel.init(rawValue:)),
                urgency: BulletinContent.Urgency(rawValue: urgency) ?? .normal, sendAt: sendAt
            ),
            state: try row.decode(BulletinState.self, at: 7), scheduledFor: try row.decode(Date?.self, at: 8),
            fanoutCursor: try row.decode(Int64.self, at: 9), audienceCreated: try row.decode(Bool.self, at: 10),
            correlationID: try row.decode(String.self, at: 11), createdAt: try row.decode(Date.self, at: 12),
            audienceCursor: try row.decode(Int64.self, at: 13),
            deliveryIDs: try Self.range(row.decode(Int64?.self, at: 14), row.decode(Int64?.self, at: 15))
        )
    }

    private static func range(_ first: Int64?, _ last: Int64?) -> ClosedRange<Int64>? {
        guard let first, let last, first <= last else { return nil }
        return first...last
    }

    /// Counts of the bulletin's deliveries per channel and state.
    public static func progress(_ id: UUID, channels: [Channel], on connection: DatabaseConnection)
        async throws -> [String: ChannelProgress]
    {
        var out: [String: ChannelProgress] = [:]
        for channel in channels { out[channel.rawValue] = ChannelProgress() }
        let rows = try await connection.query(
            """
            SELECT d.channel, d.state, count(*)
              FROM bulletins b JOIN deliveries d
                ON d.id BETWEEN b.first_delivery_id AND b.last_delivery_id AND d.bulletin_id = b.id
             WHERE b.id = \(id)
             GROUP BY d.channel, d.state
            """
        ).rows
        for row in rows {
            let (channel, state, count) = try row.decode(String.self, String.self, Int.self)
            var progress = out[channel] ?? ChannelProgress()
            progress.audience += count
            switch state {
            case "queued": progress.queued += count
            case "sent": progress.sent += count
            case "delivered": progress.delivered += count
            case "read": progress.read += count
            case "failed": progress.failed += count
            case "skipped": progress.skipped += count
            case "cancelled": progress.cancelled += count
            default: break
            }
            out[channel] = progress
        }
        return out
    }

    /// The bulletin's posts to Telegram public channels, by chat and language.
    public static func channelPosts(_ id: UUID, on connection: DatabaseConnection) async throws -> [ChannelPostStatus] {
        try await connection.query(
            """
            SELECT p.chat, p.language, d.state, d.attempts, d.provider_message_id, d.last_error
              FROM channel_posts p JOIN deliveries d ON d.id = p.delivery_id
             WHERE p.bulletin_id = \(id)
             ORDER BY p.chat, p.language
            """
        ).rows.map { row in
            let (chat, language, state, attempts, messageID, error) = try row.decode(
                String.self, String.self, String.self, Int.self, String?.self, String?.self
            )
            return ChannelPostStatus(
                chat: chat, language: language, state: state, attempts: attempts, providerMessageID: messageID,
                lastError: error
            )
        }
    }

    /// Cancels a bulletin not yet fanned out or still sending: its unsent deliveries become `cancelled`, and so
    /// does the part of its audience the composer had not written yet (the counts then still cover the whole
    /// audience). Returns the state it was in (nil when there is no such bulletin).
    public static func cancel(_ id: UUID, on connection: DatabaseConnection) async throws -> BulletinState? {
        // The composer writes deliveries only in transactions that first update this row while it is 'sending':
        // holding it, this transaction sees every delivery there will be, and the composer writes no more after.
        let rows = try await connection.query(
            "SELECT state, audience_created_at IS NULL FROM bulletins WHERE id = \(id) FOR UPDATE"
        ).rows
        guard let (state, audiencePending) = try rows.first?.decode(BulletinState.self, Bool.self) else { return nil }
        guard state != .cancelled else { return state }
        try await connection.query(
            """
            UPDATE deliveries d SET state = 'cancelled', updated_at = now()
              FROM bulletins b
             WHERE b.id = \(id) AND d.id BETWEEN b.first_delivery_id AND b.last_delivery_id AND d.bulletin_id = b.id
               AND d.state = 'queued'
            """
        )
        try await connection.query(
            """
            UPDATE deliveries d SET state = 'cancelled', updated_at = now()
              FROM channel_posts p
             WHERE p.bulletin_id = \(id) AND d.id = p.delivery_id AND d.state = 'queued'
            """
        )
        if state == .sending && audiencePending {
            try await connection.query(
                """
                WITH rest AS MATERIALIZED (
                    SELECT a.id, a.channel, row_number() OVER (ORDER BY a.id) AS n
                      FROM bulletins b,
                           bulletin_audience(b.channels, b.topics, b.urgency = 'urgent', b.audience_cursor) a
                     WHERE b.id = \(id)
                ), ids AS MATERIALIZED (
                    SELECT reserve_delivery_ids(count(*)) AS first FROM rest HAVING count(*) > 0
                ), written AS (
                    INSERT INTO deliveries (id, bulletin_id, subscriber_id, channel, state)
                    SELECT ids.first + rest.n - 1, \(id), rest.id, rest.channel, 'cancelled' FROM rest, ids
                    RETURNING id
                )
                UPDATE bulletins b SET first_delivery_id = coalesce(b.first_delivery_id, w.first),
                                       last_delivery_id = greatest(b.last_delivery_id, w.last),
                                       audience_created_at = now()
                  FROM (SELECT min(id) AS first, max(id) AS last FROM written) w
                 WHERE b.id = \(id)
                """
            )
        }
        try await connection.query(
            "UPDATE bulletins SET state = 'cancelled', cancelled_at = now(), updated_at = now() WHERE id = \(id)"
        )
        return state
    }
}

/// The topics citizens can follow, with their names.
public enum Topics {
    public static func load(on connection: DatabaseConnection) async throws -> [TopicInfo] {
        let rows = try await connection.query("SELECT slug, name_it, name_zh, name_en FROM topics ORDER BY slug").rows
        var topics: [TopicInfo] = []
        for row in rows {
            let (slug, it, zh, en) = try row.decode(String.self, String.self, String?.self, String?.self)
            var names: [Language: String] = [.italian: it]
            names[.chinese] = zh
            names[.english] = en
            topics.append(TopicInfo(slug: slug, names: names))
        }
        return topics
    }
}
