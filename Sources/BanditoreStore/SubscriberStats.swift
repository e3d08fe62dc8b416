import BanditorePostgres

/// Subscriber counts: active and inactive per channel, active per language and per topic.
public struct SubscriberStats: Sendable, Codable, Hashable {
    public struct Counts: Sendable, Codable, Hashable {
        public var active: Int
        public var inactive: Int

        public init(active: Int, inactive: Int) {
            self.active = active
            self.inactive = inactive
        }
    }

    public var total: Int
    public var active: Int
    public var inactive: Int
    public var byChannel: [String: Counts]
    /// Active subscribers per language.
    public var byLanguage: [String: Int]
    /// Active subscribers following each topic (every topic listed, 0 included).
    public var byTopic: [String: Int]

    public static func load(_ database: DatabasePool) async throws -> SubscriberStats {
        try await database.withConnection { connection in
            var stats = SubscriberStats(total: 0, active: 0, inactive: 0, byChannel: [:], byLanguage: [:], byTopic: [:])
            let rows = try await connection.query(
                """
                SELECT channel, language, count(*) FILTER (WHERE active), count(*) FILTER (WHERE NOT active)
                FROM subscribers GROUP BY channel, language
                """
            ).rows
            for channel in ["whatsapp", "telegram", "wechat"] {
                stats.byChannel[channel] = Counts(active: 0, inactive: 0)
            }
            for language in ["it", "zh", "en"] { stats.byLanguage[language] = 0 }
            for row in rows {
                let (channel, language, active, inactive) = try row.decode(String.self, String.self, Int.self, Int.self)
                stats.byChannel[channel, default: Counts(active: 0, inactive: 0)].active += active
                stats.byChannel[channel, default: Counts(active: 0, inactive: 0)].inactive += inactive
                stats.byLanguage[language, default: 0] += active
                stats.active += active
                stats.inactive += inactive
            }
            stats.total = stats.active + stats.inactive
            let topics = try await connection.query(
                """
                SELECT t.slug, count(s.id)
                FROM topics t
                LEFT JOIN subscriber_topics st ON st.topic = t.slug
                LEFT JOIN subscribers s ON s.id = st.subscriber_id AND s.active
                GROUP BY t.slug
                """
            ).rows
            for row in topics {
                let (slug, count) = try row.decode(String.self, Int.self)
                stats.byTopic[slug] = count
            }
            return stats
        }
    }
}
