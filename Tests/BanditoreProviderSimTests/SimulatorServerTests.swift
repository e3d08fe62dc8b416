import AsyncHTTPClient
import BanditoreChannels
import BanditoreProviderSim
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

/// The simulator over real HTTP: keep-alive, delayed answers, body limits, health and metrics.
struct SimulatorServerTests {
    @Test func servesTheProvidersOverHTTP() async throws {
        var configuration = SimulatorConfiguration()
        configuration.statusWebhooks = false
        configuration.behaviour.whatsapp.latencyMs = 100
        let simulator = ProviderSimulator(configuration: configuration, logger: Logger(label: "test"))
        let server = SimulatorServer(simulator: simulator, host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        let channel = try await server.bind()
        let base = "http://127.0.0.1:\(channel.localAddress!.port!)"
        let client = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        do {
            func call(_ method: HTTPMethod, _ path: String, _ body: [UInt8]? = nil, headers: [(String, String)] = [])
                async throws -> (Int, [UInt8])
            {
                var request = HTTPClientRequest(url: base + path)
                request.method = method
                for (name, value) in headers { request.headers.add(name: name, value: value) }
                if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
                let response = try await client.execute(request, timeout: .seconds(10))
                return (
                    Int(response.status.code), Array(try await response.body.collect(upTo: 1 << 20).readableBytesView)
                )
            }
            // The request a dispatcher builds with the Channels codec, sent to the simulator's base URL.
            for chat in [123, 124] {  // twice on one kept-alive connection (two chats: one message a second each)
                let send = try Telegram.sendMessage(
                    token: "7770001:sim-telegram-token", chat: .id(Int64(chat)), text: "Mensa chiusa")
                let (status, body) = try await call(
                    .POST, send.path, send.body, headers: send.headers.map { ($0.key, $0.value) })
                #expect(status == 200)
                guard case .success = Telegram.decodeSendResponse(status: status, body: body) else {
                    Issue.record("send not accepted: \(String(decoding: body, as: UTF8.self))")
                    return
                }
            }
            let template = try WhatsApp.templateMessage(
                apiVersion: "v21.0", phoneNumberID: "1065403", token: "sim-whatsapp-token", to: "393470000001",
                template: "banditore_bulletin", language: "it", parameters: ["Allerta", "Neve"]
            )
            let start = ContinuousClock.now
            let (status, body) = try await call(
                .POST, template.path, template.body, headers: template.headers.map { ($0.key, $0.value) })
            #expect(start.duration(to: .now) >= .milliseconds(100))
            #expect(status == 200)
            guard case .success(let wamid) = WhatsApp.decodeSendResponse(status: status, body: body) else {
                Issue.record("template not accepted")
                return
            }
            #expect(wamid.hasPrefix("wamid."))

            let send = try Telegram.sendMessage(
                token: "7770001:sim-telegram-token", chat: .id(125), text: "Mensa chiusa")
            let (tooLarge, _) = try await call(.POST, send.path, Array(repeating: 0x20, count: (1 << 20) + 1))
            #expect(tooLarge == 413)
            #expect(try await call(.GET, "/healthz").0 == 200)
            #expect(try await call(.GET, "/nowhere").0 == 404)
            let (_, metrics) = try await call(.GET, "/metrics")
            let text = String(decoding: metrics, as: UTF8.self)
            #expect(text.contains("banditore_sim_accepted_total{channel=\"telegram\"} 2"))
            #expect(text.contains("banditore_sim_accepted_total{channel=\"whatsapp\"} 1"))
        } catch {
            Issue.record(error)
        }
        try await client.shutdown()
        try await channel.close()
        try await simulator.shutdown()
    }

    @Test("pipelined requests answered in order on one connection; a request that is not HTTP gets a 400 and a close")
    func rawConnection() async throws {
        var configuration = SimulatorConfiguration()
        configuration.statusWebhooks = false
        let simulator = ProviderSimulator(configuration: configuration, logger: Logger(label: "test"))
        let server = SimulatorServer(simulator: simulator, host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        let channel = try await server.bind()
        let port = channel.localAddress!.port!
        let pipelined = try await exchange(
            port: port,
            "GET /healthz HTTP/1.1\r\nHost: sim\r\n\r\nHEAD /healthz HTTP/1.1\r\nHost: sim\r\n\r\n"
                + "GET /nowhere HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n"
        )
        let answers = pipelined.components(separatedBy: "HTTP/1.1 ").dropFirst()
        #expect(answers.count == 3)
        let ok = try #require(answers.first)
        #expect(ok.hasPrefix("200 OK\r\n"))
        let length = try #require(ok.split(separator: "\r\n").first { $0.hasPrefix("content-length: ") })
        let body = try #require(ok.components(separatedBy: "\r\n\r\n").last)
        #expect(Int(length.dropFirst("content-length: ".count)) == body.utf8.count)
        #expect(body.utf8.count > 0)
        // HEAD (not a route of the simulator's): a head that says how long the body would be, and no body.
        let head = try #require(answers.dropFirst().first)
        #expect(head.contains("content-length: "))
        #expect(head.hasSuffix("\r\n\r\n"))
        let last = try #require(answers.last)
        #expect(last.hasPrefix("404 Not Found\r\n"))
        #expect(last.contains("connection: close\r\n"))

        let garbage = try await exchange(port: port, "NOT\u{01}HTTP AT ALL\r\n\r\n")
        #expect(garbage.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        #expect(garbage.contains("connection: close"))
        // The server is unharmed.
        #expect(
            try await exchange(port: port, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").hasPrefix(
                "HTTP/1.1 200 OK"))
        try await channel.close()
        try await simulator.shutdown()
    }

    /// Writes raw bytes on a new connection and returns everything the server sends until it closes.
    private func exchange(port: Int, _ request: String) async throws -> String {
        let collected = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: String.self)
        let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(done: collected))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        try await client.writeAndFlush(ByteBuffer(string: request))
        // A server that never closes fails the test instead of hanging it.
        let deadline = client.eventLoop.scheduleTask(in: .seconds(10)) {
            collected.fail(ChannelError.connectTimeout(.seconds(10)))
            client.close(promise: nil)
        }
        defer { deadline.cancel() }
        return try await collected.futureResult.get()
    }
}

/// Gathers what a connection receives; completes with it when the connection closes.
private final class Collector: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    private let done: EventLoopPromise<String>
    private let received = Mutex(ByteBuffer())

    init(done: EventLoopPromise<String>) {
        self.done = done
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var part = unwrapInboundIn(data)
        received.withLock { $0.writeBuffer(&part) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.succeed(received.withLock { String(buffer: $0) })
        context.fireChannelInactive()
    }
}
