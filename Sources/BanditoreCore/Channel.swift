/// A messaging channel citizens subscribe on.
public enum Channel: String, Sendable, Codable, CaseIterable, Hashable {
    /// WhatsApp-like (Cloud API shape).
    case whatsapp
    /// Telegram-like (Bot API shape).
    case telegram
    /// WeChat-like (Official Account shape).
    case wechat
}

/// A language Banditore replies and broadcasts in.
public enum Language: String, Sendable, Codable, CodingKeyRepresentable, CaseIterable, Hashable {
    case italian = "it"
    case chinese = "zh"
    case english = "en"
}
