import BanditoreCore
import DequeModule
import Foundation

/// A message the simulator accepted.
public struct RecordedMessage: Sendable, Codable, Hashable {
    /// Increasing from 1 in the order of acceptance.
    public var seq: Int
    public var channel: Channel
    public var recipient: String
    /// `text` or `template`.
    public var kind: String
    /// The text, or the template's parameters joined by newlines.
    public var text: String
    public var template: String?
    public var parameters: [String]?
    /// What the provider answered with: a wamid, a Telegram message id, a WeChat msgid (empty for custom sends).
    public var providerMessageID: String
    public var acceptedAt: Date
}

/// Per channel counters, kept even when old messages are dropped.
public struct ChannelStats: Sendable, Codable, Hashable {
    public var accepted = 0
    /// Distinct recipients that got at least one message.
    public var recipients = 0
    /// Sends of the same content to the same recipient after the first.
    public var duplicates = 0
    /// Refusals by the provider's code (`131056`, `429`, `43004`, …).
    public var rejected: [String: Int] = [:]
    /// Injected transient errors and timeouts.
    public var faults = 0
    public var timeouts = 0
    /// Sends accepted whose answer was held past the client's timeout.
    public var lateAnswers = 0
    /// Repeated requests the provider dropped (WeChat's `client_msg_id`), answered as the first was.
    public var repeatsDropped = 0
    /// Refusals for a rate limit, among `rejected`.
    public var throttled = 0
    /// Inbound webhooks sent by citizens the simulator played.
    public var webhooksSent = 0
}

/// Accepted messages and counters.
struct Recorder: Sendable {
    private(set) var messages: Deque<RecordedMessage> = []
    private(set) var stats: [Channel: ChannelStats] = [:]
    private var seq = 0
    private var perRecipient: [RecipientKey: Int] = [:]
    private var perContent: [ContentKey: Int] = [:]

    private struct RecipientKey: Hashable {
        var channel: Channel
        var recipient: String
    }

    /// Content by its hash: the text itself is kept only once it repeats.
    private struct ContentKey: Hashable {
        var channel: Channel
        var recipient: String
        var template: String?
        var textHash: Int
    }
    private var repeatedTexts: [ContentKey: String] = [:]
    let limit: Int

    init(limit: Int) {
        self.limit = max(0, limit)
    }

    mutating func record(
        channel: Channel, recipient: String, kind: String, text: String, template: String? = nil,
        parameters: [String]? = nil, providerMessageID: String
    ) {
        seq += 1
        var first = false
        perRecipient[RecipientKey(channel: channel, recipient: recipient), default: 0].increment(andNoteFirst: &first)
        var repeated = false
        let contentKey = ContentKey(
            channel: channel, recipient: recipient, template: template, textHash: text.hashValue)
        perContent[contentKey, default: 0].increment(andNoteRepeat: &repeated)
        if repeated && repeatedTexts[contentKey] == nil { repeatedTexts[contentKey] = text }
        count(channel) {
            $0.accepted += 1
            if first { $0.recipients += 1 }
            if repeated { $0.duplicates += 1 }
        }
        guard limit > 0 else { return }
        if messages.count >= limit { messages.removeFirst() }
        messages.append(
            RecordedMessage(
                seq: seq, channel: channel, recipient: recipient, kind: kind, text: text, template: template,
                parameters: parameters, providerMessageID: providerMessageID, acceptedAt: Date()
            ))
    }

    mutating func count(_ channel: Channel, _ update: (inout ChannelStats) -> Void) {
        update(&stats[channel, default: ChannelStats()])
    }

    /// Messages, oldest first, filtered.
    func find(channel: Channel?, recipient: String?, after: Int, limit: Int) -> [RecordedMessage] {
        var out: [RecordedMessage] = []
        for message in messages where message.seq > after {
            if let channel, message.channel != channel { continue }
            if let recipient, message.recipient != recipient { continue }
            out.append(message)
            if out.count >= limit { break }
        }
        return out
    }

    /// Recipients that got the same content more than once.
    func duplicates(channel: Channel?) -> [Duplicate] {
        perContent.compactMap { key, count -> Duplicate? in
            guard count > 1, channel == nil || channel == key.channel else { return nil }
            return Duplicate(
                channel: key.channel, recipient: key.recipient, template: key.template,
                text: repeatedTexts[key] ?? "", count: count
            )
        }.sorted { ($0.channel.rawValue, $0.recipient) < ($1.channel.rawValue, $1.recipient) }
    }

    var recorded: Int { seq }

    public struct Duplicate: Sendable, Codable, Hashable {
        public var channel: Channel
        public var recipient: String
        public var template: String?
        public var text: String
        public var count: Int
    }
}

extension Int {
    fileprivate mutating func increment(andNoteFirst first: inout Bool) {
        self += 1
        first = self == 1
    }

    fileprivate mutating func increment(andNoteRepeat repeated: inout Bool) {
        self += 1
        repeated = self > 1
    }
}
