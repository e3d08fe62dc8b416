import BanditoreChannels
import BanditoreCore

/// What came of one send.
public enum SendOutcome: Sendable, Hashable {
    /// The provider accepted it; its message id when it gives one (WeChat custom sends give none).
    case sent(providerMessageID: String?)
    case failed(ProviderFailure)
}

/// How one message is to be sent, beyond its text and address.
public struct SendOptions: Sendable, Hashable {
    /// The same for every attempt at one delivery, on every replica: a provider that takes one (WeChat's template
    /// `client_msg_id`) drops a repeated request carrying it, so a retry after an unknown outcome is not delivered
    /// twice. At most 64 bytes.
    public var idempotencyKey: String?
    /// Telegram's `allow_paid_broadcast`: up to 1,000 messages a second, paid per message.
    public var paidBroadcast: Bool

    public init(idempotencyKey: String? = nil, paidBroadcast: Bool = false) {
        self.idempotencyKey = idempotencyKey
        self.paidBroadcast = paidBroadcast
    }

    /// The key of a delivery row, as sent to the provider.
    public static func idempotencyKey(deliveryID: Int64) -> String { "banditore-d\(deliveryID)" }
}

/// Delivers one rendered message to one address of a channel. Implementations turn the message into the
/// provider's request with `BanditoreChannels`, perform it, and classify the answer; they never throw.
public protocol ChannelSender: Sendable {
    var channel: Channel { get }

    /// Sends; an expired credential is renewed (once, shared by every replica) and the send tried again inside.
    func send(_ message: RenderedMessage, to address: String, options: SendOptions) async -> SendOutcome
}

extension ChannelSender {
    public func send(_ message: RenderedMessage, to address: String) async -> SendOutcome {
        await send(message, to: address, options: SendOptions())
    }
}

/// Which permanent failures mean the address itself is gone (blocked, unfollowed, unknown), so that the registry
/// deactivates it, as opposed to a message the provider refused (bad template, too long), which says nothing about
/// the citizen.
public enum UnreachableRecipient {
    public static func isGone(channel: Channel, code: String, reason: String) -> Bool {
        switch channel {
        case .whatsapp:
            // 131026 undeliverable (not on WhatsApp, blocked the business); 131021 recipient is the sender.
            return code == "131026"
        case .telegram:
            // 403: blocked, deactivated, kicked; 400 chat not found.
            return code == "403" || (code == "400" && reason.lowercased().contains("chat not found"))
        case .wechat:
            // 43004 not a follower (unfollowed); 40003 invalid openid.
            return code == "43004" || code == "40003"
        }
    }
}
