import Foundation

/// A unit of work for a dispatcher: one message, rendered per language, for a chunk of recipients of one channel.
///
/// Published by the composer (a bulletin's recipients, hundreds per job) and the registry (a reply to one citizen)
/// to `banditore.deliveries` with the channel as routing key; retries travel through the delay queues as jobs of
/// the recipients still to do, with `attempt` raised. JSON, `type: delivery.job`.
public struct DeliveryJob: Sendable, Codable, Hashable {
    public static let messageType = "delivery.job"

    /// Unique per published job (retries get a new one); used as the AMQP message id.
    public var id: String
    /// The bulletin, or nil for a reply to a citizen's command.
    public var bulletinID: UUID?
    public var channel: Channel
    public var urgent: Bool
    /// Sends already tried for these recipients (0 on the first delivery).
    public var attempt: Int
    /// The message per language; a recipient whose language is missing gets Italian.
    public var messages: [Language: RenderedMessage]
    public var recipients: [Recipient]
    /// Follows a bulletin from the admin API to the provider, in every log line.
    public var correlationID: String?
    /// Why the previous attempt failed (retries and dead letters).
    public var lastError: String?

    public init(
        id: String = UUID().uuidString.lowercased(), bulletinID: UUID? = nil, channel: Channel, urgent: Bool = false,
        attempt: Int = 0, messages: [Language: RenderedMessage], recipients: [Recipient], correlationID: String? = nil,
        lastError: String? = nil
    ) {
        self.id = id
        self.bulletinID = bulletinID
        self.channel = channel
        self.urgent = urgent
        self.attempt = attempt
        self.messages = messages
        self.recipients = recipients
        self.correlationID = correlationID
        self.lastError = lastError
    }

    /// The message for a language: its own, else Italian, else any.
    public func message(for language: Language) -> RenderedMessage? {
        messages[language] ?? messages[.italian] ?? messages.values.first
    }

    /// A reply to one citizen: not a bulletin, no delivery row; sent even to a subscriber who just left
    /// (the reply confirms it).
    public var isReply: Bool { bulletinID == nil }

    /// Which of the channel's three ranks the job goes in.
    public var rank: DeliveryRank { isReply ? .reply : urgent ? .urgent : .normal }
}

/// The order in which a channel's work goes out: urgent bulletins first, then replies to citizens, then normal
/// bulletins. Each rank has a queue of its own per channel, and inside a dispatcher the channel's send slots go to
/// the highest rank waiting.
public enum DeliveryRank: Int, Sendable, Hashable, CaseIterable, Comparable {
    case urgent = 0
    case reply = 1
    case normal = 2

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    /// `urgent`, `reply`, `normal`: for logs and metrics.
    public var name: String {
        switch self {
        case .urgent: "urgent"
        case .reply: "reply"
        case .normal: "normal"
        }
    }
}

/// One addressee of a job.
public struct Recipient: Sendable, Codable, Hashable {
    /// The `deliveries` row that records the outcome (bulletins); nil for replies.
    public var deliveryID: Int64?
    public var subscriberID: Int64?
    /// Phone number (WhatsApp), chat id (Telegram) or OpenID (WeChat).
    public var address: String
    public var language: Language

    public init(deliveryID: Int64? = nil, subscriberID: Int64? = nil, address: String, language: Language = .italian) {
        self.deliveryID = deliveryID
        self.subscriberID = subscriberID
        self.address = address
        self.language = language
    }
}

/// A message ready for a channel: free text, or a template with its parameters (WhatsApp body parameters in
/// order; WeChat named fields).
public struct RenderedMessage: Sendable, Codable, Hashable {
    public enum Kind: String, Sendable, Codable {
        case text
        case template
    }
    public var kind: Kind
    /// The text (kind `text`).
    public var text: String?
    /// Template name (WhatsApp) or template id (WeChat).
    public var template: String?
    /// The template's language code (WhatsApp: `it`, `zh_CN`, `en`).
    public var templateLanguage: String?
    /// WhatsApp body parameters, in order.
    public var parameters: [String]?
    /// WeChat template fields.
    public var fields: [String: String]?
    /// WeChat: the page the template opens.
    public var url: String?

    public static func text(_ text: String) -> RenderedMessage {
        RenderedMessage(kind: .text, text: text)
    }

    public static func whatsappTemplate(_ name: String, language: String, parameters: [String]) -> RenderedMessage {
        RenderedMessage(kind: .template, template: name, templateLanguage: language, parameters: parameters)
    }

    public static func wechatTemplate(_ id: String, fields: [String: String], url: String? = nil) -> RenderedMessage {
        RenderedMessage(kind: .template, template: id, fields: fields, url: url)
    }

    public init(
        kind: Kind, text: String? = nil, template: String? = nil, templateLanguage: String? = nil,
        parameters: [String]? = nil, fields: [String: String]? = nil, url: String? = nil
    ) {
        self.kind = kind
        self.text = text
        self.template = template
        self.templateLanguage = templateLanguage
        self.parameters = parameters
        self.fields = fields
        self.url = url
    }
}

/// Published to `banditore.events` as `recipient.unreachable` when a provider refuses an address for good
/// (blocked the bot, not a follower, unknown number): the registry deactivates it.
public struct RecipientUnreachable: Sendable, Codable, Hashable {
    public static let routingKey = "recipient.unreachable"
    public var channel: Channel
    public var address: String
    public var subscriberID: Int64?
    /// The provider's code (`131026`, `403`, `43004`, …) and what it said.
    public var code: String
    public var reason: String
    public var at: Date

    public init(channel: Channel, address: String, subscriberID: Int64?, code: String, reason: String, at: Date) {
        self.channel = channel
        self.address = address
        self.subscriberID = subscriberID
        self.code = code
        self.reason = reason
        self.at = at
    }
}
