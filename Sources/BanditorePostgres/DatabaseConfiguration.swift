import struct Foundation.URLComponents

/// How to reach the database.
public struct DatabaseConfiguration: Sendable, Hashable {
    /// A `postgres://` or `postgresql://` URL, handed to libpq as it is.
    public var url: String
    /// Seconds allowed to connect.
    public var connectTimeout: Int
    /// Connections the pool opens at most.
    public var maxConnections: Int
    /// Shown in `pg_stat_activity`.
    public var applicationName: String

    public init(url: String, connectTimeout: Int = 5, maxConnections: Int = 8, applicationName: String = "banditore")
        throws
    {
        guard let components = URLComponents(string: url),
            components.scheme == "postgres" || components.scheme == "postgresql"
        else {
            throw DatabaseError(.invalidURL, message: "expected postgres://user:password@host:port/database")
        }
        self.url = url
        self.connectTimeout = connectTimeout
        self.maxConnections = max(1, maxConnections)
        self.applicationName = applicationName
    }

    /// The URL without its password, for logs.
    public var redactedURL: String {
        guard var components = URLComponents(string: url) else { return "postgres://…" }
        if components.password != nil { components.password = "***" }
        return components.string ?? "postgres://…"
    }
}
