import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import Testing

@testable import BanditoreDispatch

/// A scripted HTTP/1.1 server on a free port: each request's path says what it does.
/// `/echo/<x>` answers 200 with `x`; `/close/<x>` answers with `Connection: close`; `/drop` answers and then closes
/// without saying so; `/hang` never answers; `/big` answers 64 KiB; `/reset` closes without answering.
/// Event loops of these tests' own: other suites in the process load the shared ones (simulators at full speed),
/// which could delay these exchanges past their deadlines.
private let poolTestLoops = MultiThreadedEventLoopGroup(numberOfThreads: 2)

private final class ScriptedServer: Sendable {
    final class Counters: Sendable {
        let connections = Atomic<Int>(0)
        let requests = Atomic<Int>(0)
    }

    let channel: any Channel
    let counters = Counters()

    var port: Int { channel.localAddress!.port! }
    var connectionCount: Int { counters.connections.load(ordering: .relaxed) }
    var requestCount: Int { counters.requests.load(ordering: .relaxed) }

    /// `tls`: serve HTTPS with this context.
    init(tls: NIOSSLContext? = nil) async throws {
        let counters = self.counters
        channel = try await ServerBootstrap(group: poolTestLoops)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(ScriptedHandler(counters: counters))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }

    func close() async {
        try? await channel.close()
    }
}

private final class ScriptedHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let counters: ScriptedServer.Counters

    init(counters: ScriptedServer.Counters) {
        self.counters = counters
    }

    func channelActive(context: ChannelHandlerContext) {
        counters.connections.add(1, ordering: .relaxed)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else {
            return
        }
        counters.requests.add(1, ordering: .relaxed)
        let path = head.uri
        if path == "/hang" { return }
        if path == "/reset" {
            context.close(promise: nil)
            return
        }
        var body = context.channel.allocator.buffer(capacity: 64)
        var close = false
        if path == "/big" {
            body.writeRepeatingByte(UInt8(ascii: "x"), count: 64 * 1024)
        } else if path.hasPrefix("/close/") {
            body.writeString(String(path.dropFirst("/close/".count)))
            close = true
        } else if path == "/drop" {
            body.writeString("dropped")
        } else {
            body.writeString(String(path.dropFirst("/echo/".count)) + "|" + (head.headers["host"].first ?? ""))
        }
        var headers = HTTPHeaders([("content-length", String(body.readableBytes))])
        if close { headers.add(name: "connection", value: "close") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil
        )
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if close || path == "/drop" {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

@Suite("HTTP/1.1 pool of the dispatchers", .serialized)
struct HTTP1PoolTests {
    private func pool(_ server: ScriptedServer, connections: Int, maxBytes: Int = 1 << 20) throws -> HTTP1Pool {
        try HTTP1Pool(
            origin: .init(tls: false, host: "127.0.0.1", port: server.port), maxConnections: connections,
            maxResponseBytes: maxBytes, group: poolTestLoops
        )
    }

    private func get(_ pool: HTTP1Pool, _ path: String, timeout: TimeAmount = .seconds(30)) async throws -> String {
        let response = try await pool.execute(method: .GET, path: path, headers: [:], body: nil, timeout: timeout)
        #expect(response.status == 200)
        return String(decoding: response.body, as: UTF8.self)
    }

    @Test("many concurrent requests share a few kept-alive connections; each gets its own answer")
    func keepAlive() async throws {
        let server = try await ScriptedServer()
        let before = 0
        let pool = try pool(server, connections: 4)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<400 {
                group.addTask {
                    // A generous deadline: the requests queue for four connections on a machine that may be busy.
                    let answer = try await get(pool, "/echo/\(index)", timeout: .seconds(60))
                    #expect(answer == "\(index)|127.0.0.1:\(server.port)")
                }
            }
            try await group.waitForAll()
        }
        #expect(server.connectionCount - before <= 4)
        #expect(server.connectionCount - before >= 1)
        #expect(server.requestCount == 400)
        pool.shutdown()
        await server.close()
    }

    @Test("a server that closes after answering, said or unsaid: the next requests open new connections")
    func serverCloses() async throws {
        let server = try await ScriptedServer()
        let pool = try pool(server, connections: 2)
        for index in 0..<20 {
            #expect(try await get(pool, "/close/\(index)") == "\(index)")
            #expect(try await get(pool, "/drop") == "dropped")
            // The dropped connection sits idle, closed by the server: the pool notices and uses another.
            #expect(try await get(pool, "/echo/\(index)") == "\(index)|127.0.0.1:\(server.port)")
        }
        pool.shutdown()
        await server.close()
    }

    @Test("no answer in time, a connection reset, an answer over the cap: clear errors, and the pool carries on")
    func failures() async throws {
        let server = try await ScriptedServer()
        let pool = try pool(server, connections: 1, maxBytes: 1024)
        await #expect(throws: HTTP1PoolError.timedOut) {
            try await get(pool, "/hang", timeout: .seconds(1))  // long enough to be written on a loaded machine
        }
        // The only slot was freed: the next request goes through.
        #expect(try await get(pool, "/echo/a") == "a|127.0.0.1:\(server.port)")
        // Closed without an answer: a GET is tried once more on a new connection, then the error is reported.
        await #expect {
            try await get(pool, "/reset")
        } throws: { error in
            guard case .closedBeforeAnswer = error as? HTTP1PoolError else { return false }
            return true
        }
        await #expect(throws: HTTP1PoolError.responseTooLarge(1024)) { try await get(pool, "/big") }
        #expect(try await get(pool, "/echo/b") == "b|127.0.0.1:\(server.port)")
        pool.shutdown()
        await #expect(throws: HTTP1PoolError.shutDown) { try await get(pool, "/echo/c") }
        await server.close()
    }

    @Test("a line break in a header value or a space in the target: refused before anything is written")
    func malformedRequests() async throws {
        let server = try await ScriptedServer()
        let pool = try pool(server, connections: 2)
        let bad: [(path: String, headers: [String: String])] = [
            ("/echo/a", ["authorization": "Bearer x\r\nx-injected: 1"]),
            ("/echo/a", ["x-token": "a\nb"]),
            ("/echo/a", ["bad name": "v"]),
            ("/echo/a b", [:]),
            ("/echo/\u{7F}", [:]),
            ("", [:]),
        ]
        for request in bad {
            await #expect(throws: HTTP1PoolError.malformedRequest) {
                _ = try await pool.execute(
                    method: .POST, path: request.path, headers: request.headers, body: [1], timeout: .seconds(5)
                )
            }
        }
        #expect(server.requestCount == 0)
        // Tokens, a query, percent-encoding and UTF-8 in a value (an obs-text byte is allowed) go through.
        let fine = try await pool.execute(
            method: .GET, path: "/echo/ok?access_token=A-b_c.9%2F", headers: ["x-name": "Città"], body: nil,
            timeout: .seconds(30)
        )
        #expect(fine.status == 200)
        #expect(server.requestCount == 1)
        pool.shutdown()
        await server.close()
    }

    @Test("a connection idle for longer than maxIdle is closed, not reused")
    func maxIdle() async throws {
        let server = try await ScriptedServer()
        let pool = try HTTP1Pool(
            origin: .init(tls: false, host: "127.0.0.1", port: server.port), maxConnections: 4,
            maxIdle: .milliseconds(100), group: poolTestLoops
        )
        _ = try await get(pool, "/echo/1")
        _ = try await get(pool, "/echo/2")
        #expect(server.connectionCount == 1)
        try await Task.sleep(for: .milliseconds(300))
        _ = try await get(pool, "/echo/3")
        #expect(server.connectionCount == 2)
        pool.shutdown()
        await server.close()
    }

    @Test("nobody listening: a connect error, not a hang")
    func refused() async throws {
        let server = try await ScriptedServer()
        let port = server.port
        await server.close()
        let pool = try HTTP1Pool(
            origin: .init(tls: false, host: "127.0.0.1", port: port), maxConnections: 2, group: poolTestLoops
        )
        do {
            _ = try await pool.execute(method: .GET, path: "/", headers: [:], body: nil, timeout: .seconds(5))
            Issue.record("a request to a closed port succeeded")
        } catch let error as HTTP1PoolError {
            guard case .connect = error else {
                Issue.record("expected a connect error, got \(error)")
                return
            }
        }
        // The failed connection gave its slot back: twice more, the same clear error.
        for _ in 0..<2 {
            await #expect(throws: HTTP1PoolError.self) {
                _ = try await pool.execute(method: .GET, path: "/", headers: [:], body: nil, timeout: .seconds(5))
            }
        }
    }

    @Test("ProviderHTTP keeps the base URL's path and refuses what is not an http(s) URL")
    func providerHTTP() async throws {
        let server = try await ScriptedServer()
        let http = try ProviderHTTP(baseURL: "http://127.0.0.1:\(server.port)/echo/", maxConnections: 2)
        let (status, body) = try await http.perform(.init(method: .post, path: "/p", body: Array("{}".utf8)))
        #expect(status == 200)
        #expect(String(decoding: body, as: UTF8.self) == "p|127.0.0.1:\(server.port)")
        http.shutdown()
        #expect(throws: DispatchError.self) { try ProviderHTTP(baseURL: "ftp://example.org", maxConnections: 1) }
        #expect(throws: DispatchError.self) { try ProviderHTTP(baseURL: "not a url", maxConnections: 1) }
        await server.close()
    }
}

/// A certificate authority and a server certificate for `127.0.0.1` and `localhost`, made by `openssl` for one test.
private struct TestCertificates {
    let authority: NIOSSLCertificate
    let serverChain: [NIOSSLCertificate]
    let serverKey: NIOSSLPrivateKey
    let otherAuthority: NIOSSLCertificate

    init() throws {
        let folder = FileManager.default.temporaryDirectory.appending(path: "banditore-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        func openssl(_ arguments: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            process.arguments = arguments
            process.currentDirectoryURL = folder
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw NIOSSLExtraError.failedToValidateHostname  // any error: the test cannot go on
            }
        }
        for name in ["ca", "other-ca"] {
            try openssl([
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                "-subj", "/CN=Banditore test \(name)", "-keyout", "\(name).key", "-out", "\(name).pem",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            ])
        }
        try openssl([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr",
        ])
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
            .write(to: folder.appending(path: "server.ext"), atomically: true, encoding: .utf8)
        try openssl([
            "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
            "-extfile", "server.ext", "-out", "server.pem",
        ])
        authority = try NIOSSLCertificate(file: folder.appending(path: "ca.pem").path, format: .pem)
        otherAuthority = try NIOSSLCertificate(file: folder.appending(path: "other-ca.pem").path, format: .pem)
        serverChain = try NIOSSLCertificate.fromPEMFile(folder.appending(path: "server.pem").path)
        serverKey = try NIOSSLPrivateKey(file: folder.appending(path: "server.key").path, format: .pem)
    }

    func serverContext() throws -> NIOSSLContext {
        try NIOSSLContext(
            configuration: .makeServerConfiguration(
                certificateChain: serverChain.map { .certificate($0) }, privateKey: .privateKey(serverKey))
        )
    }

    func client(trusting authority: NIOSSLCertificate) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates([authority])
        return configuration
    }
}

@Suite("HTTP/1.1 pool over TLS, as production uses it", .serialized)
struct HTTP1PoolTLSTests {
    @Test(
        "https: requests share kept-alive TLS connections; an answer that never comes is an unknown outcome; a server the roots do not vouch for is refused before anything is sent"
    )
    func https() async throws {
        let certificates = try TestCertificates()
        let server = try await ScriptedServer(tls: try certificates.serverContext())
        let pool = try HTTP1Pool(
            origin: .init(tls: true, host: "127.0.0.1", port: server.port), maxConnections: 2, group: poolTestLoops,
            tlsConfiguration: certificates.client(trusting: certificates.authority)
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<50 {
                group.addTask {
                    let response = try await pool.execute(
                        method: .POST, path: "/echo/\(index)", headers: ["content-type": "application/json"],
                        body: Array("{}".utf8), timeout: .seconds(30)
                    )
                    #expect(response.status == 200)
                    #expect(String(decoding: response.body, as: UTF8.self) == "\(index)|127.0.0.1:\(server.port)")
                }
            }
            try await group.waitForAll()
        }
        #expect(server.connectionCount <= 2 && server.requestCount == 50)
        do {
            _ = try await pool.execute(
                method: .POST, path: "/hang", headers: [:], body: Array("{}".utf8), timeout: .seconds(2))
            Issue.record("a request that was never answered returned")
        } catch let error as HTTP1PoolError {
            #expect(error == .timedOut && error.outcomeUnknown)
        }
        pool.shutdown()

        // A client that trusts another authority: the handshake fails, and nothing was sent.
        let stranger = try HTTP1Pool(
            origin: .init(tls: true, host: "127.0.0.1", port: server.port), maxConnections: 1, group: poolTestLoops,
            tlsConfiguration: certificates.client(trusting: certificates.otherAuthority)
        )
        let requestsBefore = server.requestCount
        do {
            _ = try await stranger.execute(
                method: .POST, path: "/echo/x", headers: [:], body: Array("{}".utf8), timeout: .seconds(10))
            Issue.record("a server with an untrusted certificate was answered")
        } catch let error as HTTP1PoolError {
            #expect(!error.outcomeUnknown, "\(error)")
        }
        #expect(server.requestCount == requestsBefore)
        stranger.shutdown()
        await server.close()
    }
}
