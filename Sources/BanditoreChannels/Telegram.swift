import BanditoreCore
import Foundation

/// The Telegram Bot API shape: sendMessage, its errors, updates and the webhook secret.
public enum Telegram {
    public static let maxTextLength = 4096

    /// A chat: a numeric id (users, groups; 52 bits) or a public channel's `@username`.
    public enum ChatID: Sendable, Hashable {
        case id(Int64)
        case username(String)
    }

    /// `sendMessage` with link previews off.
    public static func sendMessage(
        token: String, chat: ChatID, text: String, parseMode: String? = nil, silent: Bool = false,
        paidBroadcast: Bool = false
    ) throws -> ProviderRequest {
        guard !text.isEmpty else { throw ChannelLimitError(channel: "telegram", field: "text", message: "empty") }
        guard text.count <= maxTextLength else {
            throw ChannelLimitError(
                channel: "telegram", field: "text", message: "\(text.count) characters, at most \(maxTextLength)"
            )
        }
        // Keys in sorted order, as before; written by hand (see JSONText).
        var json = paidBroadcast ? "{\"allow_paid_broadcast\":true,\"chat_id\":" : "{\"chat_id\":"
        switch chat {
        case .id(let id): json += String(id)
        case .username(let name): json += JSONText.quote(name.hasPrefix("@") ? name : "@\(name)")
        }
        if silent { json += ",\"disable_notification\":true" }
        json += ",\"link_preview_options\":{\"is_disabled\":true}"
        if let parseMode { json += ",\"parse_mode\":" + JSONText.quote(parseMode) }
        json += ",\"text\":" + JSONText.quote(text) + "}"
        return ProviderRequest(
            method: .post, path: "/bot\(token)/sendMessage", headers: ["Content-Type": "application/json"],
            body: Array(json.utf8)
        )
    }

    /// Escapes text for `parse_mode: MarkdownV2`, so that a bulletin's punctuation is shown as written.
    public static func escapeMarkdownV2(_ text: String) -> String {
        let special = Set("_*[]()~`>#+-=|{}.!\\")
        var out = ""
        for ch in text {
            if special.contains(ch) { out.append("\\") }
            out.append(ch)
        }
        return out
    }

    /// The outcome of a send: the message id, or how to handle the failure.
    public static func decodeSendResponse(status: Int, body: [UInt8]) -> Result<Int64, ProviderFailure> {
        let json = JSONValue.parse(body)
        if json?["ok"]?.bool == true, let id = json?["result"]?["message_id"]?.int64 {
            return .success(id)
        }
        let code = json?["error_code"]?.int ?? status
        let description = json?["description"]?.string ?? "HTTP \(status)"
        let parameters = json?["parameters"]
        switch code {
        case 429:
            let retry = parameters?["retry_after"]?.int.map { Duration.seconds($0) }
            return .failure(.channelThrottled(retryAfter: retry, reason: description))
        case 401, 404:
            return .failure(.auth(reason: description))  // a wrong token answers 404 on the bot path
        case 403:
            return .failure(.permanent(code: "403", reason: description))  // blocked, deactivated, kicked
        case 400:
            if let migrated = parameters?["migrate_to_chat_id"]?.int64 {
                return .failure(.permanent(code: "400-migrated:\(migrated)", reason: description))
            }
            return .failure(.permanent(code: "400", reason: description))
        case 500...:
            return .failure(.transient(reason: description))
        default:
            return .failure(.transient(reason: description))
        }
    }

    /// Checks `X-Telegram-Bot-Api-Secret-Token` in constant time.
    public static func verifySecret(header: String?, secret: String) -> Bool {
        guard let header else { return false }
        return constantTimeEquals(Array(header.utf8), Array(secret.utf8))
    }

    /// What an update reports.
    public enum Update: Sendable, Hashable {
        /// A text message; `command` is set for `/cmd` (with `@Bot` dropped), `argument` for what follows it.
        case message(
            updateID: Int64, chatID: Int64, userID: Int64, languageCode: String?, text: String,
            command: String?, argument: String?, messageID: Int64)
        /// The user blocked (`kicked`) or unblocked (`member`) the bot.
        case membership(updateID: Int64, chatID: Int64, status: String)
        /// Any other update, acknowledged and ignored.
        case other(updateID: Int64)
    }

    /// Reads one Update.
    public static func decodeUpdate(_ body: [UInt8]) throws -> Update {
        guard let root = JSONValue.parse(body), root.isObject else {
            throw WebhookDecodingError("not a JSON object")
        }
        guard let updateID = root["update_id"]?.int64 else {
            throw WebhookDecodingError("no update_id")
        }
        if let member = root["my_chat_member"], member.isObject {
            guard let chat = member["chat"]?["id"]?.int64,
                let status = member["new_chat_member"]?["status"]?.string
            else { throw WebhookDecodingError("my_chat_member without chat or new_chat_member") }
            return .membership(updateID: updateID, chatID: chat, status: status)
        }
        if let message = root["message"], message.isObject {
            guard let chat = message["chat"]?["id"]?.int64,
                let messageID = message["message_id"]?.int64
            else { throw WebhookDecodingError("message without chat or message_id") }
            let from = message["from"]
            guard let text = message["text"]?.string else { return .other(updateID: updateID) }
            var command: String?
            var argument: String?
            if let first = message["entities"]?.array?.first, first["type"]?.string == "bot_command",
                first["offset"]?.int == 0, let length = first["length"]?.int, length >= 0
            {
                let utf16 = Array(text.utf16)
                let end = min(length, utf16.count)
                var name = String(decoding: utf16[0..<end], as: UTF16.self)
                if let at = name.firstIndex(of: "@") { name = String(name[..<at]) }
                command = name.lowercased()
                let rest = String(decoding: utf16[end...], as: UTF16.self).trimmingCharacters(in: .whitespaces)
                argument = rest.isEmpty ? nil : rest
            }
            return .message(
                updateID: updateID, chatID: chat, userID: from?["id"]?.int64 ?? chat,
                languageCode: from?["language_code"]?.string, text: text, command: command, argument: argument,
                messageID: messageID
            )
        }
        return .other(updateID: updateID)
    }
}
