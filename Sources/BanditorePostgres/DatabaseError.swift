/// An error raised by the PostgreSQL module.
///
/// `description` stays generic (no SQL, no values); `debugDescription` carries the server's message, detail,
/// SQLSTATE and the query text.
public struct DatabaseError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case invalidURL, connectionFailed, connectionClosed, server, decoding, unexpectedNull, cancelled, closed
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        public static let invalidURL = Code(.invalidURL)
        /// The server could not be reached or refused the connection.
        public static let connectionFailed = Code(.connectionFailed)
        /// The connection broke during the call (for example the server restarted).
        public static let connectionClosed = Code(.connectionClosed)
        /// The server answered with an error; see ``DatabaseError/sqlState``.
        public static let server = Code(.server)
        /// A column's text could not be read as the requested type.
        public static let decoding = Code(.decoding)
        /// A column was NULL where a non-optional type was requested.
        public static let unexpectedNull = Code(.unexpectedNull)
        /// The task was cancelled and the query with it.
        public static let cancelled = Code(.cancelled)
        /// The client was shut down.
        public static let closed = Code(.closed)

        public var description: String { base.rawValue }
    }

    public var code: Code
    /// The five-character SQLSTATE for server errors (e.g. `23505` for a unique violation).
    public var sqlState: String?
    /// The server's or library's primary message.
    public var message: String?
    public var detail: String?
    /// The violated constraint, for integrity errors.
    public var constraint: String?
    /// The SQL text (never the parameter values).
    public var query: String?

    package init(
        _ code: Code, sqlState: String? = nil, message: String? = nil, detail: String? = nil,
        constraint: String? = nil, query: String? = nil
    ) {
        self.code = code
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.constraint = constraint
        self.query = query
    }

    /// A short label without payload, for metrics.
    public var shortDescription: String { sqlState.map { "\(code)-\($0)" } ?? code.description }

    /// True for a unique violation (SQLSTATE 23505).
    public var isUniqueViolation: Bool { sqlState == "23505" }

    public var description: String {
        switch code {
        case .server: "DatabaseError: server error \(sqlState ?? "?")"
        case .connectionFailed: "DatabaseError: could not connect to the database"
        case .connectionClosed: "DatabaseError: the connection to the database was lost"
        default: "DatabaseError: \(code)"
        }
    }

    public var debugDescription: String {
        var parts = [description]
        if let message { parts.append(message) }
        if let detail { parts.append("detail: \(detail)") }
        if let constraint { parts.append("constraint: \(constraint)") }
        if let query { parts.append("query: \(query)") }
        return parts.joined(separator: "; ")
    }
}
