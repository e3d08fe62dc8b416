/// A dispatcher failure that is not a provider's answer.
public struct DispatchError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String {
            case rateLimit = "rate_limit"
            case configuration
            case transport
            case deadLetters = "dead_letters"
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The shared rate limit could not be read or leased.
        public static let rateLimit = Code(.rateLimit)
        /// A setting is missing or wrong.
        public static let configuration = Code(.configuration)
        /// The provider could not be reached.
        public static let transport = Code(.transport)
        /// Listing or replaying dead letters failed.
        public static let deadLetters = Code(.deadLetters)

        public var description: String { base.rawValue }
    }

    public var code: Code
    /// What happened, for logs (may name keys and queues, never message content).
    public var detail: String?

    public init(_ code: Code, detail: String? = nil) {
        self.code = code
        self.detail = detail
    }

    public var description: String { "DispatchError(\(code))" }
    public var debugDescription: String { "DispatchError(\(code)): \(detail ?? "")" }
}
