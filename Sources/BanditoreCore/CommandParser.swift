import Foundation

/// Reads a citizen's text as a command, forgiving of case, accents, extra spaces and trailing punctuation, in
/// Italian, English and Chinese:
///
/// | command | Italian | English | Chinese |
/// |---|---|---|---|
/// | subscribe | `ATTIVA ISCRIZIONE`, `attiva`, `iscrivimi`, `/start` | `subscribe`, `start` | `订阅` |
/// | unsubscribe | `DISATTIVA ISCRIZIONE`, `disattiva`, `cancellami`, `/stop` | `unsubscribe`, `stop` | `取消订阅`, `退订` |
/// | list topics | `argomenti`, `temi`, `/argomenti` | `topics` | `主题`, `话题` |
/// | follow a topic | `segui scuola`, `/segui scuola` | `follow scuola` | `关注 scuola` |
/// | unfollow a topic | `non seguire scuola`, `smetti scuola` | `unfollow scuola` | `取消关注 scuola` |
/// | language | `lingua cinese`, `italiano`, `/lingua zh` | `language english`, `english` | `中文`, `语言 英语` |
/// | status | `stato` | `status` | `状态` |
/// | help | `aiuto`, `?`, `info` | `help` | `帮助` |
///
/// Anything else is `unknown` (answered with the help). A command written in Chinese reports Chinese as the
/// citizen's language, and one in English words (`subscribe`, `help`, `follow scuola`; not `start` or `stop`,
/// which are Telegram's commands in every language) reports English.
public enum CommandParser {
    public struct Parsed: Sendable, Hashable {
        public var kind: CitizenCommand.Kind
        public var topic: String?
        public var language: Language?
        /// Chinese when the text has Chinese characters; English when the command is an English word.
        public var writtenIn: Language?

        public init(
            kind: CitizenCommand.Kind, topic: String? = nil, language: Language? = nil, writtenIn: Language? = nil
        ) {
            self.kind = kind
            self.topic = topic
            self.language = language
            self.writtenIn = writtenIn
        }
    }

    private static let exact: [String: CitizenCommand.Kind] = [
        "attiva iscrizione": .subscribe, "attiva": .subscribe, "iscrivimi": .subscribe, "iscrizione": .subscribe,
        "start": .subscribe, "subscribe": .subscribe, "订阅": .subscribe,
        "disattiva iscrizione": .unsubscribe, "disattiva": .unsubscribe, "cancellami": .unsubscribe,
        "cancella iscrizione": .unsubscribe, "stop": .unsubscribe, "unsubscribe": .unsubscribe,
        "取消订阅": .unsubscribe, "退订": .unsubscribe,
        "argomenti": .listTopics, "temi": .listTopics, "topics": .listTopics, "topic": .listTopics,
        "主题": .listTopics, "话题": .listTopics,
        "stato": .status, "status": .status, "状态": .status,
        "aiuto": .help, "help": .help, "?": .help, "info": .help, "帮助": .help, "menu": .help,
    ]

    /// Commands that are English words only: written so, they report English.
    private static let english: Set<String> = [
        "subscribe", "unsubscribe", "topics", "topic", "status", "help", "follow", "unfollow", "language",
    ]

    /// Prefixes taking an argument, longest first so that `non seguire` wins over `segui`-like overlaps.
    private static let prefixed: [(String, CitizenCommand.Kind)] = [
        ("smetti di seguire", .unfollow), ("non seguire", .unfollow), ("取消关注", .unfollow), ("unfollow", .unfollow),
        ("smetti", .unfollow), ("segui", .follow), ("follow", .follow), ("关注", .follow),
        ("language", .setLanguage), ("lingua", .setLanguage), ("语言", .setLanguage),
        ("start", .subscribe), ("attiva iscrizione", .subscribe),
    ]

    private static let languages: [String: Language] = [
        "it": .italian, "ita": .italian, "italiano": .italian, "italian": .italian, "意大利语": .italian,
        "意大利文": .italian,
        "zh": .chinese, "cn": .chinese, "cinese": .chinese, "chinese": .chinese, "中文": .chinese, "汉语": .chinese,
        "chinese (simplified)": .chinese, "简体中文": .chinese,
        "en": .english, "eng": .english, "inglese": .english, "english": .english, "英语": .english, "英文": .english,
    ]

    public static func parse(_ text: String) -> Parsed {
        let writtenIn: Language? = containsHan(text) ? .chinese : nil
        var normalised = normalise(text)
        if normalised.hasPrefix("/") {
            normalised.removeFirst()
            // Telegram `/cmd@Bot args`
            if let space = normalised.firstIndex(of: " ") {
                let head = normalised[..<space]
                if let at = head.firstIndex(of: "@") { normalised.removeSubrange(at..<space) }
            } else if let at = normalised.firstIndex(of: "@") {
                normalised = String(normalised[..<at])
            }
            normalised = normalised.replacingOccurrences(of: "nonseguire", with: "non seguire")
        }
        if let kind = exact[normalised] {
            return Parsed(kind: kind, writtenIn: writtenIn ?? (english.contains(normalised) ? .english : nil))
        }
        if let language = languages[normalised] {
            return Parsed(kind: .setLanguage, language: language, writtenIn: writtenIn)
        }
        for (prefix, kind) in prefixed where normalised.hasPrefix(prefix) {
            let rest = normalised.dropFirst(prefix.count)
            // Latin words need a space after them; Chinese ones may run into their argument.
            let isHan = containsHan(prefix)
            if !isHan && !rest.hasPrefix(" ") { continue }
            let argument = String(rest.drop(while: { $0 == " " }))
            if argument.isEmpty { continue }
            let writtenIn = writtenIn ?? (english.contains(prefix) ? .english : nil)
            switch kind {
            case .setLanguage:
                guard let language = languages[argument] else {
                    return Parsed(kind: .setLanguage, writtenIn: writtenIn)
                }
                return Parsed(kind: .setLanguage, language: language, writtenIn: writtenIn)
            default:
                return Parsed(kind: kind, topic: argument, writtenIn: writtenIn)
            }
        }
        return Parsed(kind: .unknown, writtenIn: writtenIn)
    }

    /// Lower case, no accents, full-width forms folded, single spaces, no trailing punctuation.
    public static func normalise(_ text: String) -> String {
        // Most commands are plain ASCII, where folding is lower-casing: Foundation's folding (through ICU) cost
        // more than the rest of a webhook's decoding.
        let folded =
            asciiLowercased(text)
            ?? text.folding(options: [.caseInsensitive, .diacriticInsensitive, .widthInsensitive], locale: nil)
            .lowercased()
        let words = folded.split(whereSeparator: { $0.isWhitespace })
        var joined = words.joined(separator: " ")
        // Words are single-spaced already; what punctuation leaves at the end goes with it (`attiva !`).
        while let last = joined.last, last == " " || ".!。！,，;；:：".contains(last) { joined.removeLast() }
        return joined
    }

    /// A topic as citizens may write it: `Protezione Civile`, `protezione-civile`, `protezione_civile`.
    public static func normaliseTopic(_ text: String) -> String {
        normalise(text).replacingOccurrences(of: "_", with: " ").replacingOccurrences(of: "-", with: " ")
    }

    /// `text` lower-cased when it is all ASCII, else nil.
    static func asciiLowercased(_ text: String) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            guard byte < 0x80 else { return nil }
            bytes.append(byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte + 32 : byte)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func containsHan(_ text: some StringProtocol) -> Bool {
        text.unicodeScalars.contains { (0x4E00...0x9FFF).contains($0.value) || (0x3400...0x4DBF).contains($0.value) }
    }
}
