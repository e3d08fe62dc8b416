/// A topic citizens may follow, with its names.
public struct TopicInfo: Sendable, Hashable, Codable {
    public var slug: String
    public var names: [Language: String]

    public init(slug: String, names: [Language: String]) {
        self.slug = slug
        self.names = names
    }

    /// The name in `language`, else Italian, else the slug.
    public func name(in language: Language) -> String {
        names[language] ?? names[.italian] ?? slug
    }

    /// Whether the citizen's words name this topic: the slug (`protezione-civile`, `protezione civile`) or the
    /// start of a name in any language (`Farmacie`, `学校`, `school`).
    public func matches(_ words: String) -> Bool {
        let wanted = CommandParser.normaliseTopic(words)
        guard !wanted.isEmpty else { return false }
        if CommandParser.normaliseTopic(slug) == wanted { return true }
        guard wanted.count >= 2 else { return false }
        return names.values.contains { CommandParser.normaliseTopic($0).hasPrefix(wanted) }
    }
}

/// What the registry answers a citizen.
public enum Reply: Sendable, Hashable {
    case subscribed(topics: [TopicInfo])
    case welcomeBack(topics: [TopicInfo])
    case alreadySubscribed(topics: [TopicInfo])
    case unsubscribed
    case notSubscribed
    case following(TopicInfo)
    case alreadyFollowing(TopicInfo)
    case unfollowed(TopicInfo)
    case notFollowing(TopicInfo)
    case unknownTopic(String, all: [TopicInfo])
    case topicList(all: [TopicInfo], followed: Set<String>)
    case languageSet
    case unknownLanguage
    case status(active: Bool, topics: [TopicInfo])
    case help
    case notUnderstood
}

/// The replies' words, in Italian, Chinese and English, with the commands of the citizen's channel.
public enum ReplyText {
    public static func render(_ reply: Reply, language: Language, channel: Channel) -> String {
        let w = Words(language: language, channel: channel)
        switch reply {
        case .subscribed(let topics):
            return w.pick(
                it: "Iscrizione attivata. Riceverai gli avvisi del Comune su: \(w.list(topics)).",
                zh: "订阅成功。您将收到市政府关于以下主题的通知：\(w.list(topics))。",
                en: "You are subscribed. You will receive the town hall's notices on: \(w.list(topics))."
            ) + "\n" + w.nextSteps
        case .welcomeBack(let topics):
            return w.pick(
                it: "Bentornato! Iscrizione riattivata con le tue preferenze: \(w.list(topics)).",
                zh: "欢迎回来！订阅已恢复，保留您之前的设置：\(w.list(topics))。",
                en: "Welcome back! Your subscription is active again with your preferences: \(w.list(topics))."
            ) + "\n" + w.nextSteps
        case .alreadySubscribed(let topics):
            return w.pick(
                it: "Sei già iscritto. Argomenti: \(w.list(topics)).",
                zh: "您已经订阅。主题：\(w.list(topics))。",
                en: "You are already subscribed. Topics: \(w.list(topics))."
            ) + "\n" + w.nextSteps
        case .unsubscribed:
            return w.pick(
                it: "Iscrizione disattivata: non riceverai più messaggi. Per tornare scrivi \(w.subscribeCommand).",
                zh: "已取消订阅，您将不再收到消息。如需重新订阅，请发送“\(w.subscribeCommand)”。",
                en: "You are unsubscribed and will get no more messages. To come back, send \(w.subscribeCommand)."
            )
        case .notSubscribed:
            return w.pick(
                it: "Non sei iscritto. Per iscriverti scrivi \(w.subscribeCommand).",
                zh: "您尚未订阅。如需订阅，请发送“\(w.subscribeCommand)”。",
                en: "You are not subscribed. To subscribe, send \(w.subscribeCommand)."
            )
        case .following(let topic):
            return w.pick(
                it: "Ora segui: \(topic.name(in: language)).",
                zh: "已关注：\(topic.name(in: language))。",
                en: "You now follow: \(topic.name(in: language))."
            )
        case .alreadyFollowing(let topic):
            return w.pick(
                it: "Segui già: \(topic.name(in: language)).",
                zh: "您已关注：\(topic.name(in: language))。",
                en: "You already follow: \(topic.name(in: language))."
            )
        case .unfollowed(let topic):
            return w.pick(
                it: "Non segui più: \(topic.name(in: language)).",
                zh: "已取消关注：\(topic.name(in: language))。",
                en: "You no longer follow: \(topic.name(in: language))."
            )
        case .notFollowing(let topic):
            return w.pick(
                it: "Non seguivi: \(topic.name(in: language)).",
                zh: "您没有关注：\(topic.name(in: language))。",
                en: "You were not following: \(topic.name(in: language))."
            )
        case .unknownTopic(let words, let all):
            return w.pick(
                it: "Argomento sconosciuto: \(words). Argomenti disponibili:",
                zh: "未知主题：\(words)。可选主题：",
                en: "Unknown topic: \(words). Topics available:"
            ) + "\n" + w.catalogue(all, followed: nil)
        case .topicList(let all, let followed):
            return w.pick(
                it: "Argomenti (✓ = segui):",
                zh: "主题（✓ = 已关注）：",
                en: "Topics (✓ = followed):"
            ) + "\n" + w.catalogue(all, followed: followed) + "\n"
                + w.pick(
                    it:
                        "Scrivi SEGUI o NON SEGUIRE seguito dal codice, per esempio: segui \(all.first?.slug ?? "scuola").",
                    zh: "发送“关注”或“取消关注”加主题代码，例如：关注 \(all.first?.slug ?? "scuola")。",
                    en: "Send FOLLOW or UNFOLLOW and the code, for example: follow \(all.first?.slug ?? "scuola")."
                )
        case .languageSet:
            return w.pick(
                it: "Lingua impostata: italiano.",
                zh: "已切换为中文。",
                en: "Language set: English."
            )
        case .unknownLanguage:
            return w.pick(
                it: "Lingue disponibili: italiano, cinese (中文), inglese (english). Scrivi per esempio: lingua cinese.",
                zh: "可选语言：意大利语（italiano）、中文、英语（english）。例如发送：中文。",
                en: "Languages available: Italian (italiano), Chinese (中文), English. Send for example: english."
            )
        case .status(let active, let topics):
            if !active { return render(.notSubscribed, language: language, channel: channel) }
            return w.pick(
                it: "Iscrizione attiva. Lingua: italiano. Argomenti: \(w.list(topics)).",
                zh: "订阅有效。语言：中文。主题：\(w.list(topics))。",
                en: "Subscription active. Language: English. Topics: \(w.list(topics))."
            )
        case .help:
            return w.help
        case .notUnderstood:
            return w.pick(it: "Non ho capito.", zh: "无法识别该指令。", en: "Sorry, I did not understand.") + "\n" + w.help
        }
    }

    private struct Words {
        let language: Language
        let channel: Channel

        func pick(it: String, zh: String, en: String) -> String {
            switch language {
            case .italian: it
            case .chinese: zh
            case .english: en
            }
        }

        var subscribeCommand: String {
            switch channel {
            case .whatsapp: pick(it: "ATTIVA ISCRIZIONE", zh: "订阅", en: "SUBSCRIBE")
            case .telegram: "/start"
            case .wechat: pick(it: "ATTIVA ISCRIZIONE", zh: "订阅", en: "SUBSCRIBE")
            }
        }

        var unsubscribeCommand: String {
            switch channel {
            case .whatsapp, .wechat: pick(it: "DISATTIVA ISCRIZIONE", zh: "取消订阅", en: "UNSUBSCRIBE")
            case .telegram: "/stop"
            }
        }

        var nextSteps: String {
            pick(
                it:
                    "Scrivi ARGOMENTI per sceglierli, LINGUA CINESE o LINGUA INGLESE per cambiare lingua, \(unsubscribeCommand) per uscire.",
                zh: "发送“主题”选择主题，发送“意大利语”或“英语”更换语言，发送“\(unsubscribeCommand)”退订。",
                en: "Send TOPICS to choose them, ITALIANO or 中文 to change language, \(unsubscribeCommand) to leave."
            )
        }

        var help: String {
            pick(
                it:
                    "Comandi: \(subscribeCommand) per iscriverti, \(unsubscribeCommand) per uscire, ARGOMENTI per l'elenco, SEGUI <argomento>, NON SEGUIRE <argomento>, LINGUA <italiano|cinese|inglese>, STATO.",
                zh:
                    "指令：“\(subscribeCommand)”订阅，“\(unsubscribeCommand)”退订，“主题”查看列表，“关注 <主题>”，“取消关注 <主题>”，“语言 <中文|意大利语|英语>”，“状态”。",
                en:
                    "Commands: \(subscribeCommand) to subscribe, \(unsubscribeCommand) to leave, TOPICS for the list, FOLLOW <topic>, UNFOLLOW <topic>, LANGUAGE <english|italiano|中文>, STATUS."
            )
        }

        func list(_ topics: [TopicInfo]) -> String {
            if topics.isEmpty { return pick(it: "nessuno", zh: "无", en: "none") }
            return topics.map { $0.name(in: language) }.joined(separator: pick(it: "; ", zh: "；", en: "; "))
        }

        func catalogue(_ topics: [TopicInfo], followed: Set<String>?) -> String {
            topics.map { topic in
                let mark = followed.map { $0.contains(topic.slug) ? "✓ " : "· " } ?? "· "
                return "\(mark)\(topic.slug): \(topic.name(in: language))"
            }.joined(separator: "\n")
        }
    }
}
