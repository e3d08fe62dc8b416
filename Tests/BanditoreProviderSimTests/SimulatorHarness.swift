import BanditoreProviderSim
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOHTTP1
import Synchronization

/// Runs a simulator, called directly (no sockets; `SimulatorServerTests` covers the HTTP server), and shuts it
/// down afterwards.
func withSimulator<T: Sendable>(
    _ configure: (inout SimulatorConfiguration) -> Void = { _ in },
    _ body: @Sendable (ProviderSimulator, SimClient) async throws -> T
) async throws -> T {
    var configuration = SimulatorConfiguration()
    configuration.statusWebhooks = false
    configuration.seed = 42
    configure(&configuration)
    let simulator = ProviderSimulator(configuration: configuration, logger: Logger(label: "test.sim"))
    do {
        let result = try await body(simulator, SimClient(simulator: simulator))
        try await simulator.shutdown()
        return result
    } catch {
        try? await simulator.shutdown()
        throw error
    }
}

/// Calls the simulator as its HTTP server would, holding each answer for its delay.
struct SimClient: Sendable {
    let simulator: ProviderSimulator

    struct Answer: Sendable {
        var status: Int
        var bytes: [UInt8]
        var json: [String: Any] {
            ((try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]) ?? [:]
        }
        var text: String { String(decoding: bytes, as: UTF8.self) }
    }

    func send(
        _ method: HTTPMethod, _ uri: String, json: String? = nil, headers: [(String, String)] = []
    ) async throws -> Answer {
        var fields = HTTPHeaders(headers)
        if json != nil && !fields.contains(name: "content-type") {
            fields.add(name: "content-type", value: "application/json")
        }
        let request = SimRequest(method: method, uri: uri, headers: fields, body: Array((json ?? "").utf8))
        let response: SimResponse
        switch simulator.handle(request) {
        case .now(let now):
            response = now
            if now.delayMs > 0 { try await Task.sleep(for: .milliseconds(now.delayMs)) }
        case .later(let operation):
            response = await operation()
        }
        return Answer(status: Int(response.status.code), bytes: Array(response.body.utf8))
    }

    // MARK: Provider calls with the default credentials

    func whatsappText(to: String, _ body: String = "Iscrizione attivata.", token: String = "sim-whatsapp-token")
        async throws -> Answer
    {
        try await send(
            .POST, "/v21.0/1065403/messages",
            json: "{\"messaging_product\":\"whatsapp\",\"recipient_type\":\"individual\",\"to\":\"\(to)\","
                + "\"type\":\"text\",\"text\":{\"preview_url\":false,\"body\":\"\(body)\"}}",
            headers: [("authorization", "Bearer \(token)")]
        )
    }

    func whatsappTemplate(to: String, parameters: [String] = ["Allerta meteo", "Scuole chiuse domani"]) async throws
        -> Answer
    {
        let values = parameters.map { "{\"type\":\"text\",\"text\":\"\($0)\"}" }.joined(separator: ",")
        return try await send(
            .POST, "/v21.0/1065403/messages",
            json: "{\"messaging_product\":\"whatsapp\",\"to\":\"\(to)\",\"type\":\"template\",\"template\":"
                + "{\"name\":\"banditore_bulletin\",\"language\":{\"code\":\"it\"},\"components\":"
                + "[{\"type\":\"body\",\"parameters\":[\(values)]}]}}",
            headers: [("authorization", "Bearer sim-whatsapp-token")]
        )
    }

    func telegram(chat: String, text: String = "Iscrizione attivata.", extra: String = "") async throws -> Answer {
        try await send(
            .POST, "/bot7770001:sim-telegram-token/sendMessage",
            json: "{\"chat_id\":\(chat),\"text\":\"\(text)\",\"link_preview_options\":{\"is_disabled\":true}\(extra)}"
        )
    }

    func wechatToken() async throws -> String {
        let answer = try await send(
            .GET, "/cgi-bin/token?grant_type=client_credential&appid=wxsim0000000001&secret=sim-wechat-app-secret"
        )
        return answer.json["access_token"] as? String ?? ""
    }

    func wechatTemplate(token: String, to: String, clientMessageID: String? = nil) async throws -> Answer {
        let key = clientMessageID.map { "\"client_msg_id\":\"\($0)\"," } ?? ""
        return try await send(
            .POST, "/cgi-bin/message/template/send?access_token=\(token)",
            json:
                "{\(key)\"touser\":\"\(to)\",\"template_id\":\"Xk3vExampleTpl\",\"data\":{\"thing1\":{\"value\":\"Allerta meteo\"}}}"
        )
    }

    func wechatCustom(token: String, to: String, content: String = "Iscrizione attivata.") async throws -> Answer {
        try await send(
            .POST, "/cgi-bin/message/custom/send?access_token=\(token)",
            json: "{\"touser\":\"\(to)\",\"msgtype\":\"text\",\"text\":{\"content\":\"\(content)\"}}"
        )
    }
}

/// A stand-in for ingest's webhook endpoints that records what arrives (for testing the citizens the simulator
/// plays; ingest itself is tested against the simulator end to end).
final class WebhookInbox: Sendable {
    struct Received: Sendable {
        var path: String
        var query: String
        /// Header values by lowercased name.
        var headers: [String: String]
        var body: [UInt8]
    }

    let received = Mutex<[Received]>([])
    /// Answer 500 to the first try of each body, to see retries.
    let failFirstTries: Bool
    private let seen = Mutex<Set<[UInt8]>>([])

    init(failFirstTries: Bool = false) {
        self.failFirstTries = failFirstTries
    }

    var all: [Received] { received.withLock { $0 } }

    /// Runs a live server on an ephemeral port and passes its base URL.
    func serve<T: Sendable>(_ body: @Sendable (String) async throws -> T) async throws -> T {
        let router = Router()
        for channel in ["whatsapp", "telegram", "wechat"] {
            router.post("webhooks/\(channel)") { request, _ -> Response in
                var request = request
                let bytes = Array(try await request.collectBody(upTo: 1 << 20).readableBytesView)
                if self.failFirstTries, self.seen.withLock({ $0.insert(bytes).inserted }) {
                    return Response(status: .internalServerError)
                }
                self.received.withLock {
                    $0.append(
                        Received(
                            path: request.uri.path, query: request.uri.query ?? "",
                            headers: Dictionary(
                                request.headers.map { ($0.name.canonicalName, $0.value) }, uniquingKeysWith: { $1 }
                            ),
                            body: bytes
                        ))
                }
                return Response(status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(string: "success")))
            }
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        return try await app.test(.live) { client in
            try await body("http://127.0.0.1:\(client.port!)")
        }
    }
}
