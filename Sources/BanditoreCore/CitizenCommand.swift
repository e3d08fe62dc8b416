import Foundation

/// What a citizen (or the provider on their behalf) told us, normalised from any channel's webhook.
///
/// Published by ingest to `banditore.commands` with routing key `command.<channel>` once the webhook's
/// signature holds; consumed by the registry, which applies it once (``dedupeKey``) and replies.
/// JSON, `type: citizen.command`.
public struct CitizenCommand: Sendable, Codable, Hashable {
    public static let messageType = "citizen.command"

    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// WhatsApp `ATTIVA ISCRIZIONE`, Telegram `/start [topic]`, WeChat follow event.
        case subscribe
        /// WhatsApp `DISATTIVA ISCRIZIONE`, Telegram `/stop` or blocking the bot, WeChat unfollow event.
        case unsubscribe
        case follow
        case unfollow
        case listTopics = "list-topics"
        case setLanguage = "set-language"
        /// What the citizen's subscription looks like.
        case status
        case help
        /// Text that is no command: answered with the help.
        case unknown
        /// A provider's report on a message we sent (WhatsApp statuses).
        case deliveryStatus = "delivery-status"
        /// Acknowledged and ignored (a Telegram unblock, a WeChat menu event, a non-text message).
        case ignored
    }

    /// Why a subscriber left.
    public enum LeaveReason: String, Sendable, Codable {
        /// They asked (`DISATTIVA ISCRIZIONE`, `/stop`).
        case command
        /// They blocked the bot (Telegram `kicked`).
        case blocked
        /// They unfollowed the account (WeChat).
        case unfollowed
        /// The provider refused the address for good.
        case unreachable
    }

    /// A provider's report on a sent message.
    public struct DeliveryReport: Sendable, Codable, Hashable {
        /// The id the provider gave when accepting the send.
        public var providerMessageID: String
        /// `sent`, `delivered`, `read` or `failed`.
        public var status: String
        public var errorCode: Int?
        public var errorTitle: String?

        public init(providerMessageID: String, status: String, errorCode: Int? = nil, errorTitle: String? = nil) {
            self.providerMessageID = providerMessageID
            self.status = status
            self.errorCode = errorCode
            self.errorTitle = errorTitle
        }
    }

    /// Unique per webhook event; the AMQP message id.
    public var id: String
    public var channel: Channel
    /// Phone number (WhatsApp), chat id (Telegram) or OpenID (WeChat).
    public var address: String
    public var kind: Kind
    /// The provider's id of the inbound message (WhatsApp `wamid`, Telegram `update_id`, WeChat `MsgId` or
    /// sender+time for events): a provider's retry carries the same and takes effect once. Nil for reports.
    public var dedupeKey: String?
    /// The topic named by `follow`, `unfollow` or a `subscribe` that pre-selects one, as the citizen wrote it.
    public var topic: String?
    /// `set-language`: the language asked for.
    public var language: Language?
    /// The language the provider reports for the citizen (Telegram `language_code`), when it is one we serve:
    /// a new subscriber's language.
    public var reportedLanguage: Language?
    /// The language the command was written in, when it tells (Chinese characters): it becomes the subscriber's.
    public var writtenIn: Language?
    public var leaveReason: LeaveReason?
    /// The citizen's text, for `unknown`.
    public var text: String?
    public var report: DeliveryReport?
    public var receivedAt: Date
    public var correlationID: String

    public init(
        id: String = UUID().uuidString.lowercased(), channel: Channel, address: String, kind: Kind,
        dedupeKey: String? = nil, topic: String? = nil, language: Language? = nil, reportedLanguage: Language? = nil,
        writtenIn: Language? = nil, leaveReason: LeaveReason? = nil, text: String? = nil, report: DeliveryReport? = nil,
        receivedAt: Date = Date(),
        correlationID: String? = nil
    ) {
        self.id = id
        self.channel = channel
        self.address = address
        self.kind = kind
        self.dedupeKey = dedupeKey
        self.topic = topic
        self.language = language
        self.reportedLanguage = reportedLanguage
        self.writtenIn = writtenIn
        self.leaveReason = leaveReason
        self.text = text
        self.report = report
        self.receivedAt = receivedAt
        self.correlationID = correlationID ?? id
    }

    /// The routing key on `banditore.commands`.
    public var routingKey: String { "command.\(channel.rawValue)" }
}

extension Language {
    /// A provider's language code (`it`, `zh-hans`, `en-GB`, …) as a language we serve, else nil.
    public init?(providerCode: String?) {
        guard let code = providerCode?.lowercased() else { return nil }
        let primary = code.split(whereSeparator: { $0 == "-" || $0 == "_" }).first.map(String.init) ?? code
        guard let language = Language(rawValue: primary) else { return nil }
        self = language
    }
}
