import BanditoreChannels
import BanditorePostgres
import Foundation
import Logging

/// The WeChat access token, kept in `provider_tokens` so that every replica uses the same one and it is renewed
/// once when it expires: a renewal locks the account's row, and a replica that finds a token other than the one the
/// provider refused takes it instead of asking for another (WeChat allows 2,000 token calls a day, and a new token
/// ends the previous one after a short overlap).
public actor ProviderTokenStore {
    public let account: String
    private let fetch: @Sendable () async throws -> WeChat.AccessToken
    private let database: DatabasePool
    private let logger: Logger
    private var cached: (token: String, validUntil: Date)?
    private var renewal: Task<String, any Error>?

    /// - Parameters:
    ///   - account: the row's key, e.g. `wechat:<appid>`.
    ///   - fetch: asks the provider for a new token.
    public init(
        account: String, database: DatabasePool, logger: Logger,
        fetch: @escaping @Sendable () async throws -> WeChat.AccessToken
    ) {
        self.account = account
        self.database = database
        self.logger = logger
        self.fetch = fetch
    }

    /// Fetches WeChat tokens with `GET /cgi-bin/token`.
    public static func wechat(
        appID: String, appSecret: String, http: ProviderHTTP, database: DatabasePool, logger: Logger
    ) -> ProviderTokenStore {
        ProviderTokenStore(account: "wechat:\(appID)", database: database, logger: logger) {
            let (status, body) = try await http.perform(WeChat.tokenRequest(appID: appID, secret: appSecret))
            guard (200..<300).contains(status) else { throw ProviderFailure.transient(reason: "token HTTP \(status)") }
            return try WeChat.decodeToken(body: body).get()
        }
    }

    /// A token that is still valid: the cached one, the shared one, or a new one.
    public func current() async throws -> String {
        if let cached, cached.validUntil > Date() { return cached.token }
        let row = try await database.query(
            "SELECT token, expires_at FROM provider_tokens WHERE account = \(account) AND expires_at > now()"
        ).first
        if let row {
            let (token, expires) = try row.decode(String.self, Date.self)
            cached = (token, expires)
            return token
        }
        return try await renew(rejected: nil)
    }

    /// Renews after the provider refused `rejected` (or none was stored). Concurrent callers share one renewal.
    public func renew(rejected: String?) async throws -> String {
        if let cached, cached.token != rejected, cached.validUntil > Date() { return cached.token }
        if let renewal { return try await renewal.value }
        let task = Task { try await self.renewShared(rejected: rejected) }
        renewal = task
        defer { renewal = nil }
        return try await task.value
    }

    private func renewShared(rejected: String?) async throws -> String {
        let (token, validUntil, fetched) = try await database.withTransaction { connection -> (String, Date, Bool) in
            try await connection.query(
                """
                INSERT INTO provider_tokens (account, token, expires_at) VALUES (\(account), '', '1970-01-01Z')
                ON CONFLICT (account) DO NOTHING
                """
            )
            if let row = try await connection.query(
                "SELECT token, expires_at, expires_at > now() FROM provider_tokens WHERE account = \(account) FOR UPDATE"
            ).first {
                let (stored, expires, valid) = try row.decode(String.self, Date.self, Bool.self)
                if valid, !stored.isEmpty, stored != rejected { return (stored, expires, false) }
            }
            let fresh = try await fetch()
            // Renew a little before the provider's expiry: a tenth of the lifetime, at most five minutes.
            let lifetime = Double(fresh.expiresIn.components.seconds)
            let validUntil = Date().addingTimeInterval(lifetime - min(lifetime / 10, 300))
            try await connection.query(
                """
                UPDATE provider_tokens SET token = \(fresh.token), expires_at = \(validUntil), refreshed_at = now()
                 WHERE account = \(account)
                """
            )
            return (fresh.token, validUntil, true)
        }
        if fetched { logger.info("access token renewed", metadata: ["token.account": "\(account)"]) }
        cached = (token, validUntil)
        return token
    }
}
