import BanditoreChannels
import BanditoreCore
import Foundation
import NIOCore
import NIOHTTP1

/// Performs `ProviderRequest`s against a provider's base URL (`http://` or `https://`, with an optional path
/// prefix) over a pool of keep-alive connections (``HTTP1Pool``), on SwiftNIO's event loops.
public struct ProviderHTTP: Sendable {
    public let baseURL: String
    public let timeout: Duration
    private let pool: HTTP1Pool
    private let prefix: String

    /// `maxConnections` bounds the connections open to the provider (one exchange at a time on each).
    public init(baseURL: String, maxConnections: Int, timeout: Duration = .seconds(10)) throws {
        let trimmed = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        guard let url = URL(string: trimmed), let scheme = url.scheme?.lowercased(),
            scheme == "http" || scheme == "https",
            let host = url.host, !host.isEmpty
        else {
            throw DispatchError(.configuration, detail: "provider URL \(baseURL) is not an http(s) URL")
        }
        let tls = scheme == "https"
        self.baseURL = trimmed
        self.timeout = timeout
        self.prefix = url.path
        self.pool = try HTTP1Pool(
            origin: .init(tls: tls, host: host, port: url.port ?? (tls ? 443 : 80)), maxConnections: maxConnections
        )
    }

    /// The status and body, or an error when the provider could not be reached or did not answer in time.
    public func perform(_ request: ProviderRequest) async throws -> (status: Int, body: [UInt8]) {
        let response = try await pool.execute(
            method: request.method == .post ? .POST : .GET, path: prefix + request.path, headers: request.headers,
            body: request.body, timeout: TimeAmount(timeout)
        )
        return (response.status, response.body)
    }

    /// Closes the idle connections; sends under way finish.
    public func shutdown() {
        pool.shutdown()
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        self = .nanoseconds(duration.wholeNanoseconds)
    }
}
