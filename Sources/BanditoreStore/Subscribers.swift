import BanditoreCore
import BanditorePostgres
import Foundation

/// A citizen's row in `subscribers`, with the topics they follow (`subscriber_topics`).
public struct SubscriberRecord: Sendable, Hashable {
    public var id: Int64
    public var channel: Channel
    public var address: String
    public var language: Language
    public var active: Bool
    /// Why they left, while inactive.
    public var inactiveReason: String?
    public var topics: Set<String>

    public init(
        id: Int64, channel: Channel, address: String, language: Language, active: Bool, inactiveReason: String? = nil,
        topics: Set<String>
    ) {
        self.id = id
        self.channel = channel
        self.address = address
        self.language = language
        self.active = active
        self.inactiveReason = inactiveReason
        self.topics = topics
    }
}

/// The citizens' rows as the registry changes them, inside its transactions: read and locked, created, saved,
/// their topics followed and dropped, deactivated.
public enum Subscribers {
    /// A citizen's key in what ``load(_:on:)`` and ``create(_:on:)`` return.
    public static func key(_ channel: Channel, _ address: String) -> String {
        "\(channel.rawValue)|\(address)"
    }

    /// The rows of these citizens with their topics, locked in id order (as every caller locks them, so that two
    /// transactions that share some do not each wait for the other's), keyed by ``key(_:_:)``; a citizen without a
    /// row is absent.
    public static func load(_ citizens: [(channel: Channel, address: String)], on connection: DatabaseConnection)
        async throws -> [String: SubscriberRecord]
    {
        var rows: [String: SubscriberRecord] = [:]
        for row in try await connection.query(
            """
            SELECT id, channel, address, language, active, inactive_reason,
                   ARRAY(SELECT topic FROM subscriber_topics t WHERE t.subscriber_id = subscribers.id)
              FROM subscribers
             WHERE (channel, address) IN (
                 SELECT * FROM unnest(\(citizens.map(\.channel.rawValue))::text[], \(citizens.map(\.address))::text[]))
             ORDER BY id FOR UPDATE
            """
        ).rows {
            let (id, channel, address, language, active, reason, topics) = try row.decode(
                Int64.self, String.self, String.self, String.self, Bool.self, String?.self, [String].self
            )
            guard let channel = Channel(rawValue: channel) else { continue }
            rows[key(channel, address)] = SubscriberRecord(
                id: id, channel: channel, address: address, language: Language(rawValue: language) ?? .italian,
                active: active, inactiveReason: reason, topics: Set(topics)
            )
        }
        return rows
    }

    /// A row to create.
    public struct New: Sendable {
        public var channel: Channel
        public var address: String
        public var language: Language
        public var topics: [String]
        /// When their first message was received.
        public var at: Date

        public init(channel: Channel, address: String, language: Language, topics: [String], at: Date) {
            self.channel = channel
            self.address = address
            self.language = language
            self.topics = topics
            self.at = at
        }
    }

    /// Creates the rows and their topics in one statement, in (channel, address) order as every batch does, so
    /// that two transactions creating some of the same citizens do not each wait for the other's; keyed by
    /// ``key(_:_:)``. A citizen created meanwhile by another transaction is a unique violation, as for one row.
    public static func create(_ new: [New], on connection: DatabaseConnection) async throws -> [String:
        SubscriberRecord]
    {
        let sorted = new.sorted { ($0.channel.rawValue, $0.address) < ($1.channel.rawValue, $1.address) }
        var topicOwners: [Int] = []
        var topicSlugs: [String] = []
        for (index, row) in sorted.enumerated() {
            topicOwners += Array(repeating: index + 1, count: row.topics.count)
            topicSlugs += row.topics
        }
        let rows = try await connection.query(
            """
            WITH input AS (
                SELECT * FROM unnest(\(sorted.map(\.channel.rawValue))::text[], \(sorted.map(\.address))::text[],
                                     \(sorted.map(\.language.rawValue))::text[], \(sorted.map(\.at))::timestamptz[])
                         WITH ORDINALITY AS i(channel, address, language, at, n)
            ), created AS (
                INSERT INTO subscribers (channel, address, language, last_inbound_at, subscribed_at)
                SELECT channel, address, language, at, now() FROM input ORDER BY n
                RETURNING id, channel, address
            ), followed AS (
                INSERT INTO subscriber_topics (subscriber_id, topic)
                SELECT created.id, t.topic
                  FROM unnest(\(topicOwners)::bigint[], \(topicSlugs)::text[]) AS t(n, topic)
                  JOIN input USING (n)
                  JOIN created ON created.channel = input.channel AND created.address = input.address
                ON CONFLICT DO NOTHING
            )
            SELECT id, channel, address FROM created
            """
        ).rows
        var out: [String: SubscriberRecord] = [:]
        let byKey = Dictionary(
            sorted.map { (key($0.channel, $0.address), $0) }, uniquingKeysWith: { first, _ in first })
        for row in rows {
            let (id, channel, address) = try row.decode(Int64.self, String.self, String.self)
            guard let channel = Channel(rawValue: channel), let new = byKey[key(channel, address)] else { continue }
            out[key(channel, address)] = SubscriberRecord(
                id: id, channel: channel, address: address, language: new.language, active: true,
                topics: Set(new.topics)
            )
        }
        return out
    }

    /// Writes a row's language and state (its topics apart: ``follow(_:id:on:)``); leaving records when and why,
    /// coming back clears them.
    public static func save(_ record: SubscriberRecord, lastInbound: Date, on connection: DatabaseConnection)
        async throws
    {
        try await connection.query(
            """
            UPDATE subscribers SET
                language = \(record.language.rawValue),
                subscribed_at = CASE WHEN \(record.active) AND NOT active THEN now() ELSE subscribed_at END,
                unsubscribed_at = CASE WHEN \(record.active) THEN NULL WHEN active THEN now() ELSE unsubscribed_at END,
                inactive_reason = CASE WHEN \(record.active) THEN NULL ELSE \(record.inactiveReason) END,
                active = \(record.active),
                last_inbound_at = greatest(last_inbound_at, \(lastInbound)),
                updated_at = now()
            WHERE id = \(record.id)
            """
        )
    }

    /// The subscriber follows the topic; true when they did not before.
    @discardableResult
    public static func follow(_ topic: String, id: Int64, on connection: DatabaseConnection) async throws -> Bool {
        try await connection.query(
            "INSERT INTO subscriber_topics (subscriber_id, topic) VALUES (\(id), \(topic)) ON CONFLICT DO NOTHING"
        ).affectedRows == 1
    }

    /// The subscriber stops following the topic; true when they did.
    @discardableResult
    public static func unfollow(_ topic: String, id: Int64, on connection: DatabaseConnection) async throws -> Bool {
        try await connection.query(
            "DELETE FROM subscriber_topics WHERE subscriber_id = \(id) AND topic = \(topic)"
        ).affectedRows == 1
    }

    /// Marks an address inactive (a provider refused it for good, or its owner left without a command).
    @discardableResult
    public static func deactivate(
        channel: Channel, address: String, reason: CitizenCommand.LeaveReason, on connection: DatabaseConnection
    ) async throws -> Bool {
        try await connection.query(
            """
            UPDATE subscribers SET active = false, unsubscribed_at = now(), inactive_reason = \(reason.rawValue),
                updated_at = now()
            WHERE channel = \(channel.rawValue) AND address = \(address) AND active
            """
        ).affectedRows > 0
    }
}
