import BanditoreCore

/// The approved templates bulletins go out with: on WhatsApp a template whose body takes two parameters (title,
/// text), on WeChat a template with the fields `first` (title) and `keyword1` (text).
public struct BulletinTemplates: Sendable, Hashable {
    public var whatsappName: String
    public var wechatID: String

    public init(whatsappName: String = "banditore_bulletin", wechatID: String = "banditore-bulletin") {
        self.whatsappName = whatsappName
        self.wechatID = wechatID
    }
}

/// Turns a bulletin into each channel's message per language, within each channel's limits.
///
/// - Telegram: plain text (no parse mode, so nothing in the bulletin can break formatting), the title, a blank line,
///   the text; at most 4,096 characters.
/// - WhatsApp: the approved template, with the title and the text as body parameters; parameters allow no newline
///   and no more than four spaces in a row, so the text's lines are joined with ` · `; at most 1,024 characters.
/// - WeChat: the approved template with `first` = title and `keyword1` = text, each at most 200 characters.
public enum BulletinRendering {
    /// The messages of `channel`, one per language the bulletin is written in.
    public static func messages(
        _ content: BulletinContent, channel: Channel, templates: BulletinTemplates = .init()
    ) -> [Language: RenderedMessage] {
        var out: [Language: RenderedMessage] = [:]
        for language in content.body.keys {
            out[language] = message(content, language: language, channel: channel, templates: templates)
        }
        return out
    }

    public static func message(
        _ content: BulletinContent, language: Language, channel: Channel, templates: BulletinTemplates = .init()
    ) -> RenderedMessage {
        let text = content.text(for: language)
        switch channel {
        case .telegram:
            return .text(content.title + "\n\n" + text)
        case .whatsapp:
            return .whatsappTemplate(
                templates.whatsappName, language: whatsappLanguage(language),
                parameters: [oneLine(content.title), oneLine(text)]
            )
        case .wechat:
            return .wechatTemplate(templates.wechatID, fields: ["first": content.title, "keyword1": text])
        }
    }

    /// Throws when a channel of the bulletin cannot carry one of its languages, naming the body's field.
    public static func check(_ content: BulletinContent, templates: BulletinTemplates = .init()) throws(BulletinInvalid)
    {
        for channel in content.channels {
            for language in Language.allCases where content.body[language] != nil {
                let message = message(content, language: language, channel: channel, templates: templates)
                do {
                    switch channel {
                    case .telegram:
                        _ = try Telegram.sendMessage(token: "0:check", chat: .id(1), text: message.text ?? "")
                    case .whatsapp:
                        try WhatsApp.validateTemplateParameters(message.parameters ?? [])
                    case .wechat:
                        _ = try WeChat.template(
                            accessToken: "check", openID: "check", templateID: templates.wechatID,
                            data: message.fields ?? [:]
                        )
                    }
                } catch let error as ChannelLimitError {
                    let aboutTitle = error.field == "data.first" || error.field == "template.parameters[0]"
                    let field = aboutTitle ? "title" : "body.\(language.rawValue)"
                    throw BulletinInvalid(field, "too long or malformed for \(channel.rawValue): \(error.message)")
                } catch {
                    throw BulletinInvalid("body.\(language.rawValue)", "\(channel.rawValue): \(error)")
                }
            }
        }
    }

    /// WhatsApp's template language codes.
    static func whatsappLanguage(_ language: Language) -> String {
        switch language {
        case .italian: "it"
        case .chinese: "zh_CN"
        case .english: "en"
        }
    }

    /// Lines joined with ` · `, tabs and runs of spaces made one space.
    static func oneLine(_ text: String) -> String {
        let lines = text.split(whereSeparator: \.isNewline).map {
            $0.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
        }
        return lines.filter { !$0.isEmpty }.joined(separator: " · ")
    }
}
