import BanditoreChannels
import BanditoreCore
import Foundation
import NIOHTTP1

/// `GET|POST /bot<token>/<method>`, as the Telegram Bot API: `sendMessage` and `getMe`.
extension ProviderSimulator {
    // The names are the wire format's.
    // swift-format-ignore: AlwaysUseLowerCamelCase
    /// sendMessage's parameters, from whichever encoding the caller used.
    struct TelegramSendBody {
        enum ChatValue {
            case id(Int64)
            case name(String)
        }

        var chat_id: ChatValue?
        var text: String?
        var parse_mode: String?
        var disable_notification: Bool?
        var allow_paid_broadcast: Bool?
    }

    func telegram(
        token: String, method: String, contentType: String?, query: Substring, body: [UInt8]
    ) -> SimResponse {
        let channel = Channel.telegram
        guard constantTimeEquals(token.utf8, configuration.telegramBotToken.utf8) else {
            return reject(channel, "401", telegramError(401, "Unauthorized"))
        }
        switch method.lowercased() {
        case "getme":
            return .json(
                .ok,
                "{\"ok\":true,\"result\":{\"id\":\(botID),\"is_bot\":true,"
                    + "\"first_name\":\(JSONText.quote(configuration.telegramBotName)),"
                    + "\"username\":\"BanditoreSimBot\",\"can_join_groups\":true,"
                    + "\"can_read_all_group_messages\":false,\"supports_inline_queries\":false}}"
            )
        case "sendmessage":
            return telegramSend(parameters(contentType: contentType, query: query, body: body))
        default:
            return reject(channel, "404", telegramError(404, "Not Found"))
        }
    }

    /// Parameters from a JSON body, a form body, or the query string, as the Bot API takes them.
    private func parameters(contentType: String?, query: Substring, body: [UInt8]) -> TelegramSendBody? {
        let type = contentType?.lowercased() ?? ""
        if type.hasPrefix("application/json") {
            guard let json = JSONValue.parse(body), json.isObject else { return nil }
            let chat: TelegramSendBody.ChatValue? =
                switch json["chat_id"] {
                case .number(let text)?: Int64(text).map { .id($0) }
                case .string(let text)?: Int64(text).map { .id($0) } ?? .name(text)
                default: nil
                }
            return TelegramSendBody(
                chat_id: chat, text: json["text"]?.string, parse_mode: json["parse_mode"]?.string,
                disable_notification: json["disable_notification"]?.bool,
                allow_paid_broadcast: json["allow_paid_broadcast"]?.bool
            )
        }
        var fields = parseForm(query)
        if type.hasPrefix("application/x-www-form-urlencoded") {
            fields.merge(parseForm(Substring(String(decoding: body, as: UTF8.self)))) { $1 }
        }
        return TelegramSendBody(
            chat_id: fields["chat_id"].map { id in Int64(id).map { .id($0) } ?? .name(id) },
            text: fields["text"], parse_mode: fields["parse_mode"],
            disable_notification: fields["disable_notification"].map { $0 == "true" },
            allow_paid_broadcast: fields["allow_paid_broadcast"].map { $0 == "true" }
        )
    }

    private func telegramSend(_ send: TelegramSendBody?) -> SimResponse {
        let channel = Channel.telegram
        guard let send else {
            return reject(channel, "400", telegramError(400, "Bad Request: can't parse JSON object"))
        }
        guard let chat = send.chat_id else {
            return reject(channel, "400", telegramError(400, "Bad Request: chat_id is empty"))
        }
        guard let text = send.text, !text.isEmpty else {
            return reject(channel, "400", telegramError(400, "Bad Request: message text is empty"))
        }
        let visible: String
        switch send.parse_mode {
        case nil, "":
            visible = text
        case "MarkdownV2":
            if let reserved = Self.unescapedMarkdownCharacter(text) {
                return reject(
                    channel, "400",
                    telegramError(
                        400,
                        "Bad Request: can't parse entities: Character '\(reserved)' is reserved and must be escaped "
                            + "with the preceding '\\'"
                    ))
            }
            visible = text.replacingOccurrences(of: "\\", with: "")
        case "HTML", "Markdown":
            visible = text.replacingOccurrences(of: "<[^>]*>", with: "", options: .regularExpression)
        default:
            return reject(channel, "400", telegramError(400, "Bad Request: unsupported parse_mode"))
        }
        // Telegram counts UTF-16 units; there are never more of them than UTF-8 bytes.
        guard visible.utf8.count <= Telegram.maxTextLength || visible.utf16.count <= Telegram.maxTextLength else {
            return reject(channel, "400", telegramError(400, "Bad Request: message is too long"))
        }
        let address: String
        let isPrivate: Bool
        switch chat {
        case .id(let id):
            address = String(id)
            isPrivate = id > 0
        case .name(let name):
            guard name.hasPrefix("@"), name.count > 1 else {
                return reject(channel, "400", telegramError(400, "Bad Request: chat not found"))
            }
            address = name
            isPrivate = false
        }

        let drawn = draw(channel)
        let delay = drawn.delayMs
        switch drawn.fault {
        case .none, .late: break
        case .timeout: return telegramError(502, "Bad Gateway").delayed(delay)
        case .error: return telegramError(500, "Internal Server Error").delayed(delay)
        }

        let now = now()
        let paid = send.allow_paid_broadcast == true
        let outcome: Outcome = state.withLock { s in
            let b = s.behaviour
            var wait: Double?
            if paid {
                if b.rateLimits && b.telegramPaidMessagesPerSecond > 0 {
                    let rate = b.telegramPaidMessagesPerSecond
                    wait = s.telegramPaid.take(
                        rate: rate, burst: rate, now: now, default: TokenBucket(burst: rate, now: now))
                }
            } else {
                wait = s.takeGlobal(channel, now: now)
            }
            if let wait { return .throttled(wait) }
            if s.isUnknown(channel, address) { return .refused(400, "Bad Request: chat not found") }
            if s.isBlocked(channel, address) {
                return .refused(
                    403,
                    isPrivate
                        ? "Forbidden: bot was blocked by the user"
                        : "Forbidden: bot was kicked from the channel chat")
            }
            // The chat's own pace counts the messages it gets.
            let chatWait =
                isPrivate
                ? s.takeRecipient(
                    "t|\(address)", rate: b.telegramChatMessagesPerSecond,
                    burst: Double(b.telegramChatBurst), now: now)
                : s.takeRecipient(
                    "t|\(address)", rate: b.telegramGroupMessagesPerMinute / 60,
                    burst: b.telegramGroupMessagesPerMinute, now: now)
            if let chatWait { return .throttled(chatWait) }
            let messageID = s.nextCounter()
            let chatJSON: String
            switch chat {
            case .id(let id) where id > 0:
                chatJSON = "{\"id\":\(id),\"first_name\":\"Cittadino\",\"type\":\"private\"}"
            case .id(let id):
                chatJSON = "{\"id\":\(id),\"title\":\"Gruppo\",\"type\":\"supergroup\"}"
            case .name(let name):
                let id = s.telegramChannelIDs[name] ?? -1_000_000_000_000 - Int64(s.telegramChannelIDs.count + 1)
                s.telegramChannelIDs[name] = id
                chatJSON =
                    "{\"id\":\(id),\"title\":\(JSONText.quote(String(name.dropFirst()))),"
                    + "\"username\":\(JSONText.quote(String(name.dropFirst()))),\"type\":\"channel\"}"
            }
            s.recorder.record(
                channel: channel, recipient: address, kind: "text", text: text, providerMessageID: String(messageID)
            )
            return .accepted(messageID: messageID, chatJSON: chatJSON)
        }
        return telegramAnswer(outcome, text: text).delayed(delay)
    }

    private enum Outcome {
        case throttled(Double)
        case refused(Int, String)
        case accepted(messageID: Int, chatJSON: String)
    }

    private func telegramAnswer(_ outcome: Outcome, text: String) -> SimResponse {
        switch outcome {
        case .throttled(let wait):
            count(.telegram, rejected: "429", throttled: true)
            let seconds = max(1, Int(wait.rounded(.up)))
            return telegramError(
                429, "Too Many Requests: retry after \(seconds)", parameters: "{\"retry_after\":\(seconds)}"
            )
        case .refused(let code, let description):
            return reject(.telegram, "\(code)", telegramError(code, description))
        case .accepted(let messageID, let chatJSON):
            return .json(
                .ok,
                "{\"ok\":true,\"result\":{\"message_id\":\(messageID),\"from\":{\"id\":\(botID),\"is_bot\":true,"
                    + "\"first_name\":\(JSONText.quote(configuration.telegramBotName)),"
                    + "\"username\":\"BanditoreSimBot\"},\"chat\":\(chatJSON),"
                    + "\"date\":\(Int(Date().timeIntervalSince1970)),\"text\":\(JSONText.quote(text))}}"
            )
        }
    }

    /// The bot's user id: the digits before the token's colon.
    var botID: Int64 {
        Int64(configuration.telegramBotToken.prefix { $0 != ":" }) ?? 7_770_001
    }

    /// `{ok:false, error_code, description, parameters?}` with the HTTP status equal to the code.
    func telegramError(_ code: Int, _ description: String, parameters: String? = nil) -> SimResponse {
        let extra = parameters.map { ",\"parameters\":\($0)" } ?? ""
        return .json(
            HTTPResponseStatus(statusCode: code),
            "{\"ok\":false,\"error_code\":\(code),\"description\":\(JSONText.quote(description))\(extra)}"
        )
    }

    /// The first character MarkdownV2 reserves that appears unescaped outside markup, if any.
    static func unescapedMarkdownCharacter(_ text: String) -> Character? {
        let reserved: Set<Character> = [".", "!", "-", "=", "+", "#", "{", "}"]
        var escaped = false
        var inLinkTarget = false
        var previous: Character = " "
        for ch in text {
            defer { previous = ch }
            if escaped {
                escaped = false
                continue
            }
            if ch == "\\" {
                escaped = true
                continue
            }
            if ch == "(" && previous == "]" { inLinkTarget = true }
            if ch == ")" && inLinkTarget { inLinkTarget = false }
            if !inLinkTarget && reserved.contains(ch) { return ch }
        }
        return nil
    }
}

extension Optional where Wrapped == TokenBucket {
    /// Takes from the bucket, creating it on first use.
    mutating func take(rate: Double, burst: Double, now: Double, default initial: TokenBucket) -> Double? {
        var bucket = self ?? initial
        defer { self = bucket }
        return bucket.take(rate: rate, burst: burst, now: now)
    }
}
