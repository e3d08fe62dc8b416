/// An error raised by the AMQP module.
///
/// `description` stays generic so it cannot leak payloads; `debugDescription` carries the broker's reply and
/// the library status.
public struct AMQPError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// What went wrong, as a stable code suitable for metric labels.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case invalidURL
            case connectionFailed
            case authenticationFailed
            case connectionLost
            case notConnected
            case closed
            case channelClosed
            case nacked
            case returned
            case protocolError
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The URL could not be parsed.
        public static let invalidURL = Code(.invalidURL)
        /// The TCP connection or the AMQP handshake failed.
        public static let connectionFailed = Code(.connectionFailed)
        /// The broker refused the credentials.
        public static let authenticationFailed = Code(.authenticationFailed)
        /// The connection dropped while the operation was in flight (for a publish: it was never confirmed).
        public static let connectionLost = Code(.connectionLost)
        /// The connection is down and reconnecting; nothing was sent.
        public static let notConnected = Code(.notConnected)
        /// The connection was closed by its owner.
        public static let closed = Code(.closed)
        /// The broker closed the channel (for example an inequivalent declaration or a missing exchange).
        public static let channelClosed = Code(.channelClosed)
        /// The broker refused a published message (basic.nack).
        public static let nacked = Code(.nacked)
        /// A mandatory message could not be routed to any queue (basic.return).
        public static let returned = Code(.returned)
        /// The broker or the library reported an unexpected protocol state.
        public static let protocolError = Code(.protocolError)

        public var description: String { base.rawValue }
    }

    /// What went wrong.
    public var code: Code
    /// The AMQP reply code sent by the broker (for example 403, 404, 406), when there was one.
    public var replyCode: Int?
    /// The broker's reply text or the library's status text.
    public var detail: String?
    /// How many published messages this error covers (for `waitForConfirms`).
    public var messageCount: Int?

    package init(_ code: Code, replyCode: Int? = nil, detail: String? = nil, messageCount: Int? = nil) {
        self.code = code
        self.replyCode = replyCode
        self.detail = detail
        self.messageCount = messageCount
    }

    /// A short label without payload, for metrics.
    public var shortDescription: String { code.description }

    public var description: String {
        switch code {
        case .invalidURL: "AMQPError: invalid AMQP URL"
        case .connectionFailed: "AMQPError: could not connect to the broker"
        case .authenticationFailed: "AMQPError: the broker refused the credentials"
        case .connectionLost: "AMQPError: connection lost before the broker confirmed"
        case .notConnected: "AMQPError: not connected to the broker"
        case .closed: "AMQPError: connection closed"
        case .channelClosed: "AMQPError: the broker closed the channel"
        case .nacked: "AMQPError: the broker refused a message"
        case .returned: "AMQPError: a mandatory message could not be routed"
        default: "AMQPError: protocol error"
        }
    }

    public var debugDescription: String {
        var parts = [description]
        if let replyCode { parts.append("reply code \(replyCode)") }
        if let detail { parts.append(detail) }
        if let messageCount { parts.append("\(messageCount) message(s)") }
        return parts.joined(separator: "; ")
    }
}
