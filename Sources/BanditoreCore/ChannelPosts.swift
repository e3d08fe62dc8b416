import Foundation

/// Telegram public channels a bulletin is posted to once per language, besides its subscribers' private chats
/// (a town hall's school-services channel, say): `TELEGRAM_CHANNEL_POSTS`, read by the composer.
///
/// The setting is a comma-separated list of `[topic:]language=chat`, where `chat` is the channel's `@username` or
/// its numeric id (`-100…`), the bot being one of its administrators:
/// `scuola:it=@scuole_prato,scuola:zh=@scuole_prato_zh` posts the bulletins about `scuola` to two channels, the
/// Italian text to one and the Chinese to the other; `it=@comune_empoli` posts every bulletin. A bulletin is
/// posted when it goes out on Telegram and it is urgent, or the entry names no topic, or one of its topics; once
/// per channel and language however many entries take it (one channel may take two languages).
public struct ChannelPost: Sendable, Hashable {
    public var topic: String?
    public var language: Language
    public var chat: String

    public init(topic: String? = nil, language: Language, chat: String) {
        self.topic = topic
        self.language = language
        self.chat = chat
    }

    /// Whether a bulletin with these topics and urgency is posted to this channel.
    public func matches(topics: [String], urgent: Bool) -> Bool {
        guard let topic else { return true }
        return urgent || topics.contains(topic)
    }

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// Parses the setting; empty means no channel posts. Throws naming the entry that is wrong.
    public static func parse(_ specification: String) throws(Invalid) -> [ChannelPost] {
        var posts: [ChannelPost] = []
        for raw in specification.split(separator: ",") {
            let entry = raw.trimmingCharacters(in: .whitespaces)
            if entry.isEmpty { continue }
            guard let equals = entry.firstIndex(of: "=") else {
                throw Invalid(description: "'\(entry)': expected [topic:]language=chat")
            }
            var left = Substring(entry[..<equals])
            let chat = entry[entry.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            var topic: String?
            if let colon = left.firstIndex(of: ":") {
                let name = left[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
                guard !name.isEmpty else { throw Invalid(description: "'\(entry)': the topic is empty") }
                topic = name
                left = left[left.index(after: colon)...]
            }
            let code = left.trimmingCharacters(in: .whitespaces).lowercased()
            guard let language = Language(rawValue: code) else {
                let served = Language.allCases.map(\.rawValue).joined(separator: ", ")
                throw Invalid(description: "'\(entry)': unknown language '\(code)' (one of \(served))")
            }
            guard isChat(chat) else {
                throw Invalid(description: "'\(entry)': '\(chat)' is neither a channel's @username nor a chat id")
            }
            let post = ChannelPost(topic: topic, language: language, chat: chat)
            guard !posts.contains(post) else { throw Invalid(description: "'\(entry)': named twice") }
            posts.append(post)
        }
        return posts
    }

    /// Telegram's public usernames: 5–32 characters, letters, digits and underscores, after `@`; or a chat id.
    private static func isChat(_ chat: String) -> Bool {
        if chat.hasPrefix("@") {
            let name = chat.dropFirst()
            return (5...32).contains(name.count)
                && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
        }
        return Int64(chat) != nil
    }
}
