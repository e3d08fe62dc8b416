import AsyncHTTPClient
import BanditoreChannels
import BanditoreProviderSim
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
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
                return (Int(response.status.code), Array(try await response.body.collect(upTo: 1 << 20).readableBytesView))
            }
            // The request a dispatcher builds with the Channels codec, sent to the simulator's base URL.
            let send = try Telegram.sendMessage(token: "7770001:sim-telegram-token", chat: .id(123), text: "Mensa chiusa")
            for _ in 0..<2 {  // twice on one kept-alive connection
                let (status, body) = try await call(.POST, send.path, send.body, headers: send.headers.map { ($0.key, $0.value) })
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
            let (status, body) = try await call(.POST, template.path, template.body, headers: template.headers.map { ($0.key, $0.value) })
            #expect(start.duration(to: .now) >= .milliseconds(100))
            #expect(status == 200)
            guard case .success(let wamid) = WhatsApp.decodeSendResponse(status: status, body: body) else {
                Issue.record("template not accepted")
                return
            }
            #expect(wamid.hasPrefix("wamid."))

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
}
