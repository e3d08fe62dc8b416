import BanditoreChannels
import BanditoreCore
import Foundation

/// Turns the providers' webhook events into ``CitizenCommand``s.
///
/// - WhatsApp: a text message is read by ``CommandParser``; another kind of message (a photo, a sticker) gets the
///   help; a status (`delivered`, `read`, `failed`) becomes a delivery report. Dedupe key: the `wamid`.
/// - Telegram: a message's text is read by ``CommandParser`` (`/start [topic]`, `/stop`, `/segui …`); the bot
///   blocked (`my_chat_member` → `kicked`) unsubscribes; anything else is ignored. `language_code` is reported.
///   Dedupe key: the `update_id`.
/// - WeChat: the follow event subscribes (a QR code's scene `qrscene_<topic>` pre-selects a topic), the unfollow
///   event unsubscribes, text is read by ``CommandParser``, other messages get the help, other events are ignored.
///   Dedupe key: `MsgId`, or sender and time for events.
public enum WebhookNormaliser {
    public static func whatsapp(_ events: [WhatsApp.Event], receivedAt: Date = Date()) -> [CitizenCommand] {
        events.map { event in
            switch event {
            case .message(let message):
                guard message.type == "text", let text = message.text else {
                    return CitizenCommand(
                        channel: .whatsapp, address: message.from, kind: .unknown, dedupeKey: message.id,
                        receivedAt: receivedAt
                    )
                }
                return command(
                    from: text, channel: .whatsapp, address: message.from, dedupeKey: message.id,
                    reported: nil, receivedAt: receivedAt)
            case .status(let status):
                return CitizenCommand(
                    channel: .whatsapp, address: status.recipient, kind: .deliveryStatus,
                    report: .init(
                        providerMessageID: status.messageID, status: status.status, errorCode: status.errorCode,
                        errorTitle: status.errorTitle
                    ),
                    receivedAt: receivedAt
                )
            }
        }
    }

    public static func telegram(_ update: Telegram.Update, receivedAt: Date = Date()) -> CitizenCommand? {
        switch update {
        case .message(let updateID, let chatID, _, let languageCode, let text, _, _, _):
            return command(
                from: text, channel: .telegram, address: String(chatID), dedupeKey: String(updateID),
                reported: Language(providerCode: languageCode), receivedAt: receivedAt
            )
        case .membership(let updateID, let chatID, let status):
            guard status == "kicked" else {
                return CitizenCommand(
                    channel: .telegram, address: String(chatID), kind: .ignored, dedupeKey: String(updateID),
                    receivedAt: receivedAt
                )
            }
            return CitizenCommand(
                channel: .telegram, address: String(chatID), kind: .unsubscribe, dedupeKey: String(updateID),
                leaveReason: .blocked, receivedAt: receivedAt
            )
        case .other:
            return nil
        }
    }

    public static func wechat(_ inbound: WeChat.Inbound, receivedAt: Date = Date()) -> CitizenCommand {
        let address = inbound.fromUser
        let key = inbound.dedupeKey
        switch inbound.messageType {
        case "event":
            switch inbound.event?.lowercased() {
            case "subscribe":
                var topic: String?
                if let scene = inbound.eventKey, scene.hasPrefix("qrscene_") {
                    topic = String(scene.dropFirst("qrscene_".count))
                }
                return CitizenCommand(
                    channel: .wechat, address: address, kind: .subscribe, dedupeKey: key, topic: topic,
                    receivedAt: receivedAt
                )
            case "unsubscribe":
                return CitizenCommand(
                    channel: .wechat, address: address, kind: .unsubscribe, dedupeKey: key, leaveReason: .unfollowed,
                    receivedAt: receivedAt
                )
            default:
                return CitizenCommand(channel: .wechat, address: address, kind: .ignored, receivedAt: receivedAt)
            }
        case "text":
            return command(
                from: inbound.content ?? "", channel: .wechat, address: address, dedupeKey: key, reported: nil,
                receivedAt: receivedAt
            )
        default:
            return CitizenCommand(
                channel: .wechat, address: address, kind: .unknown, dedupeKey: key, receivedAt: receivedAt)
        }
    }

    static func command(
        from text: String, channel: Channel, address: String, dedupeKey: String, reported: Language?, receivedAt: Date
    ) -> CitizenCommand {
        let parsed = CommandParser.parse(text)
        return CitizenCommand(
            channel: channel, address: address, kind: parsed.kind, dedupeKey: dedupeKey, topic: parsed.topic,
            language: parsed.language, reportedLanguage: reported, writtenIn: parsed.writtenIn, receivedAt: receivedAt
        )
    }
}
