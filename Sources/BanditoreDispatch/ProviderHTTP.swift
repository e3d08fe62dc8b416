import AsyncHTTPClient
import BanditoreChannels
import Foundation
import NIOCore
import NIOHTTP1

/// Performs `ProviderRequest`s against a provider's base URL with AsyncHTTPClient (non-blocking, on NIO's event
/// loops), keeping connections alive.
public struct ProviderHTTP: Sendable {
    public let baseURL: String
    public let timeout: Duration
    private let client: HTTPClient
    /// Answers larger than this are cut (a provider's answer to a send is a few hundred bytes).
    private static let maxResponseBytes = 1 << 20

    public init(baseURL: String, client: HTTPClient, timeout: Duration = .seconds(10)) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.client = client
        self.timeout = timeout
    }

    /// The status and body, or an error when the provider could not be reached or did not answer in time.
    public func perform(_ request: ProviderRequest) async throws -> (status: Int, body: [UInt8]) {
        var http = HTTPClientRequest(url: baseURL + request.path)
        http.method = request.method == .post ? .POST : .GET
        for (name, value) in request.headers { http.headers.add(name: name, value: value) }
        if let body = request.body {
            http.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await client.execute(http, timeout: TimeAmount(timeout))
        var buffer = try await response.body.collect(upTo: Self.maxResponseBytes)
        return (Int(response.status.code), buffer.readBytes(length: buffer.readableBytes) ?? [])
    }

    /// A shared client tuned for many concurrent sends to one host.
    public static func makeClient(maxConnections: Int) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(
            idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(8, maxConnections)
        )
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(30))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
