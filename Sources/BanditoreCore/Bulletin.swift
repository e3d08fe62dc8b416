import Foundation

/// A bulletin as the admin API receives it (`POST /v1/bulletins`): a title, the text per language (`it` required,
/// `zh` and `en` optional), the topics it is about, the channels (all three when absent), the urgency and an
/// optional earliest sending time.
public struct BulletinDraft: Sendable, Codable, Hashable {
    public var title: String
    public var body: [String: String]
    public var topics: [String]
    public var channels: [String]?
    public var urgency: String?
    public var sendAt: Date?

    enum CodingKeys: String, CodingKey {
        case title, body, topics, channels, urgency
        case sendAt = "send_at"
    }

    public init(
        title: String, body: [String: String], topics: [String], channels: [String]? = nil, urgency: String? = nil,
        sendAt: Date? = nil
    ) {
        self.title = title
        self.body = body
        self.topics = topics
        self.channels = channels
        self.urgency = urgency
        self.sendAt = sendAt
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        title = try container.decode(String.self, forKey: .title)
        body = try container.decode([String: String].self, forKey: .body)
        topics = try container.decode([String].self, forKey: .topics)
        channels = try container.decodeIfPresent([String].self, forKey: .channels)
        urgency = try container.decodeIfPresent(String.self, forKey: .urgency)
        // Read here rather than by the decoder's date strategy, whose error on Linux names no field.
        if let text = try container.decodeIfPresent(String.self, forKey: .sendAt) {
            guard let date = Self.parseDate(text) else {
                throw DecodingError.dataCorruptedError(
                    forKey: .sendAt, in: container,
                    debugDescription: "must be an ISO 8601 date-time with a time zone (2026-03-02T08:00:00+01:00)"
                )
            }
            sendAt = date
        } else {
            sendAt = nil
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(title, forKey: .title)
        try container.encode(body, forKey: .body)
        try container.encode(topics, forKey: .topics)
        try container.encodeIfPresent(channels, forKey: .channels)
        try container.encodeIfPresent(urgency, forKey: .urgency)
        try container.encodeIfPresent(sendAt.map { Self.formatDate($0) }, forKey: .sendAt)
    }

    /// An ISO 8601 date-time with a time zone, with or without fractions of a second.
    static func parseDate(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions.insert(.withFractionalSeconds)
        return formatter.date(from: text)
    }

    static func formatDate(_ date: Date) -> String {
        ISO8601DateFormatter().string(from: date)
    }

    /// The longest title and body accepted before any channel's own limit.
    public static let maxTitleLength = 200
    public static let maxBodyLength = 4000

    /// Checks the draft against the known topic slugs and returns the bulletin it describes (without an id), or
    /// throws the first problem, naming its field.
    public func validated(knownTopics: Set<String>) throws(BulletinInvalid) -> BulletinContent {
        let title = title.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !title.isEmpty else { throw BulletinInvalid("title", "must not be empty") }
        guard title.count <= Self.maxTitleLength else {
            throw BulletinInvalid("title", "\(title.count) characters, at most \(Self.maxTitleLength)")
        }
        var texts: [Language: String] = [:]
        for (code, text) in body {
            guard let language = Language(rawValue: code) else {
                throw BulletinInvalid("body.\(code)", "unknown language (it, zh, en)")
            }
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty else { throw BulletinInvalid("body.\(code)", "must not be empty") }
            guard trimmed.count <= Self.maxBodyLength else {
                throw BulletinInvalid("body.\(code)", "\(trimmed.count) characters, at most \(Self.maxBodyLength)")
            }
            texts[language] = trimmed
        }
        guard texts[.italian] != nil else { throw BulletinInvalid("body.it", "is required") }
        let level: BulletinContent.Urgency
        switch self.urgency {
        case nil, "normal": level = .normal
        case "urgent": level = .urgent
        case let other?: throw BulletinInvalid("urgency", "\(other) is neither normal nor urgent")
        }
        var slugs: [String] = []
        for (index, topic) in topics.enumerated() {
            guard knownTopics.contains(topic) else {
                throw BulletinInvalid(
                    "topics[\(index)]",
                    "unknown topic \(topic) (known: \(knownTopics.sorted().joined(separator: ", ")))")
            }
            if !slugs.contains(topic) { slugs.append(topic) }
        }
        guard !slugs.isEmpty || level == .urgent else {
            throw BulletinInvalid("topics", "name at least one topic (only urgent bulletins go to everyone)")
        }
        var selected: [Channel] = []
        for (index, name) in (channels ?? Channel.allCases.map(\.rawValue)).enumerated() {
            guard let channel = Channel(rawValue: name) else {
                throw BulletinInvalid("channels[\(index)]", "unknown channel \(name) (whatsapp, telegram, wechat)")
            }
            if !selected.contains(channel) { selected.append(channel) }
        }
        guard !selected.isEmpty else { throw BulletinInvalid("channels", "name at least one channel") }
        return BulletinContent(
            title: title, body: texts, topics: slugs, channels: selected, urgency: level, sendAt: sendAt
        )
    }
}

/// A bulletin's content once checked.
public struct BulletinContent: Sendable, Codable, Hashable {
    public enum Urgency: String, Sendable, Codable {
        case normal, urgent
    }

    public var title: String
    public var body: [Language: String]
    public var topics: [String]
    public var channels: [Channel]
    public var urgency: Urgency
    public var sendAt: Date?

    public init(
        title: String, body: [Language: String], topics: [String], channels: [Channel], urgency: Urgency,
        sendAt: Date? = nil
    ) {
        self.title = title
        self.body = body
        self.topics = topics
        self.channels = channels
        self.urgency = urgency
        self.sendAt = sendAt
    }

    /// The text for a language: its own, else Italian.
    public func text(for language: Language) -> String {
        body[language] ?? body[.italian] ?? ""
    }
}

/// What is wrong with a draft, and where.
public struct BulletinInvalid: Error, Sendable, Hashable, CustomStringConvertible {
    public let field: String
    public let message: String

    public init(_ field: String, _ message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { "\(field): \(message)" }
}

/// Published on `banditore.bulletins` (`bulletin.submitted`) when a bulletin is accepted; the composer reads the
/// bulletin from PostgreSQL by its id.
public struct BulletinSubmitted: Sendable, Codable, Hashable {
    public static let messageType = "bulletin.submitted"
    public static let routingKey = "bulletin.submitted"

    public var bulletinID: UUID
    public var correlationID: String

    public init(bulletinID: UUID, correlationID: String) {
        self.bulletinID = bulletinID
        self.correlationID = correlationID
    }
}
