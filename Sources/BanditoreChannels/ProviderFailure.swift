/// How a failed send is handled, whatever the provider said.
public enum ProviderFailure: Sendable, Hashable, Error {
    /// Worth retrying with backoff: 5xx, "system busy", a provider that could not be reached.
    case transient(reason: String)
    /// The request was written and no answer came (a timeout, the connection lost): the provider may have acted on
    /// it. Retried like a transient failure; where the provider drops a repeated request (WeChat's
    /// `client_msg_id`) the retry cannot deliver twice, elsewhere it may.
    case unknownOutcome(reason: String)
    /// Slow down for this recipient (a per-user pace); retry after the provider's hint when it gave one.
    case rateLimited(retryAfter: Duration?, reason: String)
    /// The provider's flood signal for the whole account (Telegram's 429, WhatsApp's 130429): every sender of
    /// the channel pauses for the hint, and this recipient is retried after it.
    case channelThrottled(retryAfter: Duration?, reason: String)
    /// The token expired or is invalid: refresh it once and retry.
    case auth(reason: String)
    /// This recipient cannot be reached (blocked, unknown, not a follower, outside the session window, or the
    /// message itself is invalid): record it, do not retry.
    case permanent(code: String, reason: String)

    /// A label without payload, for metrics.
    public var kind: String {
        switch self {
        case .transient: "transient"
        case .unknownOutcome: "unknown"
        case .rateLimited, .channelThrottled: "rate_limited"
        case .auth: "auth"
        case .permanent: "permanent"
        }
    }
}

/// A message that breaks a channel's limits, naming the field.
public struct ChannelLimitError: Error, Sendable, Hashable, CustomStringConvertible {
    public let channel: String
    public let field: String
    public let message: String

    public init(channel: String, field: String, message: String) {
        self.channel = channel
        self.field = field
        self.message = message
    }

    public var description: String { "\(channel): \(field): \(message)" }
}

/// A webhook that could not be read.
public struct WebhookDecodingError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "malformed webhook: \(message)" }
}

/// An outbound HTTP request, independent of any HTTP client.
public struct ProviderRequest: Sendable, Hashable {
    public enum Method: String, Sendable {
        case get = "GET"
        case post = "POST"
    }
    public var method: Method
    /// Path and query, to append to the provider's base URL.
    public var path: String
    public var headers: [String: String]
    public var body: [UInt8]?

    public init(method: Method, path: String, headers: [String: String] = [:], body: [UInt8]? = nil) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
    }
}

/// Constant-time comparison of two byte strings (their lengths are not secret). Inlinable, so that callers in
/// other modules get it specialised: it runs on every request a webhook receiver or the simulator checks.
@inlinable
public func constantTimeEquals(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for (x, y) in zip(a, b) { difference |= x ^ y }
    return difference == 0
}

/// Lowercase hex of bytes.
func hex(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0xf)])
    }
    return String(decoding: out, as: UTF8.self)
}
