import BanditoreAMQP
import BanditoreChannels
import BanditoreCore
import BanditorePostgres
import BanditoreProviderSim
import BanditoreRuntime
import BanditoreStore
import BanditoreTesting
import Foundation
import Logging
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
#if canImport(Glibc)
    import Glibc
#endif

/// Citizens subscribing through the simulator: banditore-ingest, banditore-registry and a dispatcher per channel,
/// in a vhost and a database of the test's own.
@Suite("Subscriptions end to end")
struct SubscriptionTests {
    /// The services of one test.
    struct Town {
        let harness: DispatchHarness
        let ingest: ServiceProcess
        let registry: ServiceProcess
        let dispatchers: [ServiceProcess]
        var composer: ServiceProcess?

        /// `composerEnvironment` non-nil starts banditore-composer too (port `18505 + base`).
        static func start(
            _ name: String, base: Int, channels: [Channel] = Channel.allCases,
            ingestEnvironment: [String: String] = [:],
            simEnvironment: [String: String] = [:], composerEnvironment: [String: String]? = nil,
            dispatcherEnvironment: [String: String] = [:]
        ) async throws -> Town {
            let ingestPort = 18500 + base
            var simEnv = ["SIM_RATE_LIMITS": "false", "INGEST_URL": "http://127.0.0.1:\(ingestPort)"]
            for (key, value) in simEnvironment { simEnv[key] = value }
            let harness = try await DispatchHarness.make(name, simPort: 19500 + base, simEnvironment: simEnv)
            var env = ["ADMIN_TOKENS": "test-admin-token"]
            for (key, value) in ingestEnvironment { env[key] = value }
            let ingest = try await harness.service("banditore-ingest", port: ingestPort, environment: env)
            let registry = try await harness.service("banditore-registry", port: 18501 + base)
            var dispatchers: [ServiceProcess] = []
            for (offset, channel) in channels.enumerated() {
                dispatchers.append(
                    try await harness.dispatcher(
                        channel, port: 18502 + base + offset,
                        environment: ["DISPATCH_RATE_PER_SECOND": "0", "DISPATCH_RECIPIENT_INTERVAL_SECONDS": "0.05"]
                            .merging(dispatcherEnvironment) { $1 }
                    )
                )
            }
            var town = Town(harness: harness, ingest: ingest, registry: registry, dispatchers: dispatchers)
            if let composerEnvironment {
                town.composer = try await harness.service(
                    "banditore-composer", port: 18505 + base, environment: composerEnvironment
                )
            }
            return town
        }

        var ingestURL: String { "http://127.0.0.1:\(ingest.port)" }

        func stop() async {
            await harness.stop([ingest, registry] + dispatchers + (composer.map { [$0] } ?? []))
        }

        /// Has the simulator play citizens against ingest.
        @discardableResult
        func play(
            _ channel: Channel, _ action: ProviderSimulator.CitizenAction, text: String? = nil, topic: String? = nil,
            language: String? = nil, first: Int = 0, count: Int = 1, concurrency: Int? = nil
        ) async throws -> ProviderSimulator.PlayReport {
            let request = ProviderSimulator.PlayRequest(
                channel: channel, action: action, text: text, topic: topic, language: language, count: count,
                first: first, concurrency: concurrency, ingestURL: ingestURL
            )
            let data = try await harness.simCall(
                "POST", "/sim/citizens", body: String(decoding: try JSONEncoder().encode(request), as: UTF8.self),
                timeout: 300
            )
            return try JSONDecoder.sim.decode(ProviderSimulator.PlayReport.self, from: data)
        }

        /// The texts the simulator accepted for `address`, in order.
        func replies(_ channel: Channel, to address: String) async throws -> [String] {
            try await harness.simMessages(channel).filter { $0.recipient == address }.map(\.text)
        }

        /// Waits until `address` has received `count` replies and returns them.
        func waitForReplies(_ channel: Channel, to address: String, count: Int) async throws -> [String] {
            var texts: [String] = []
            _ = await eventually(timeout: .seconds(20), every: .milliseconds(100)) {
                texts = (try? await replies(channel, to: address)) ?? []
                return texts.count >= count
            }
            return texts
        }

        struct Subscription: Equatable {
            var active: Bool
            var language: String
            var reason: String?
            var topics: [String]
        }

        func subscription(_ channel: Channel, _ address: String) async throws -> Subscription? {
            guard
                let row = try await harness.database.query(
                    """
                    SELECT active, language, inactive_reason,
                           coalesce((SELECT array_agg(topic ORDER BY topic) FROM subscriber_topics WHERE subscriber_id = s.id), '{}')
                    FROM subscribers s WHERE channel = \(channel.rawValue) AND address = \(address)
                    """
                ).first
            else { return nil }
            let (active, language, reason, topics) = try row.decode(Bool.self, String.self, String?.self, [String].self)
            return Subscription(active: active, language: language, reason: reason, topics: topics)
        }

        func post(_ path: String, body: [UInt8], headers: [String: String] = [:]) async throws -> (Int, String) {
            var request = URLRequest(url: URL(string: ingestURL + path)!)
            request.httpMethod = "POST"
            request.httpBody = Data(body)
            request.timeoutInterval = 30
            for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
            let (data, response) = try await URLSession.shared.data(for: request)
            return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
        }

        func get(_ path: String, headers: [String: String] = [:]) async throws -> (Int, String) {
            var request = URLRequest(url: URL(string: ingestURL + path)!)
            request.timeoutInterval = 30
            for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
            let (data, response) = try await URLSession.shared.data(for: request)
            return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
        }
    }

    static let allTopics = ["disservizi", "eventi", "farmacie", "protezione-civile", "scadenze", "scuola"]

    /// One citizen's steps: what they do, what the database shows after it, and how the reply starts.
    struct Step {
        var action: ProviderSimulator.CitizenAction
        var text: String?
        var topic: String?
        var expected: Town.Subscription
        var reply: String?
    }

    static func script(_ channel: Channel) -> [Step] {
        let all = allTopics
        switch channel {
        case .whatsapp:
            return [
                Step(
                    action: .subscribe, expected: .init(active: true, language: "it", topics: all),
                    reply: "Iscrizione attivata."),
                Step(
                    action: .text, text: "non  seguire Eventi",
                    expected: .init(active: true, language: "it", topics: all.filter { $0 != "eventi" }),
                    reply: "Non segui più: Eventi."),
                Step(
                    action: .text, text: "Lingua Inglese",
                    expected: .init(active: true, language: "en", topics: all.filter { $0 != "eventi" }),
                    reply: "Language set: English."),
                Step(
                    action: .unsubscribe,
                    expected: .init(
                        active: false, language: "en", reason: "command", topics: all.filter { $0 != "eventi" }),
                    reply: "You are unsubscribed"),
            ]
        case .telegram:
            return [
                Step(
                    action: .subscribe, topic: "scuola",
                    expected: .init(active: true, language: "it", topics: ["scuola"]),
                    reply: "Iscrizione attivata."),
                Step(
                    action: .text, text: "/segui farmacie",
                    expected: .init(active: true, language: "it", topics: ["farmacie", "scuola"]),
                    reply: "Ora segui: Farmacie di turno."),
                Step(
                    action: .text, text: "/lingua cinese",
                    expected: .init(active: true, language: "zh", topics: ["farmacie", "scuola"]), reply: "已切换为中文。"),
                Step(
                    action: .unsubscribe,
                    expected: .init(active: false, language: "zh", reason: "command", topics: ["farmacie", "scuola"]),
                    reply: "已取消订阅"),
            ]
        case .wechat:
            return [
                Step(
                    action: .subscribe, expected: .init(active: true, language: "it", topics: all),
                    reply: "Iscrizione attivata."),
                Step(
                    action: .text, text: "segui protezione civile",
                    expected: .init(active: true, language: "it", topics: all),
                    reply: "Segui già: Protezione civile e allerte meteo."),
                Step(
                    action: .text, text: "中文", expected: .init(active: true, language: "zh", topics: all),
                    reply: "已切换为中文。"),
                Step(
                    action: .text, text: "取消关注 eventi",
                    expected: .init(active: true, language: "zh", topics: all.filter { $0 != "eventi" }),
                    reply: "已取消关注：活动。"),
                Step(
                    action: .text, text: "取消订阅",
                    expected: .init(
                        active: false, language: "zh", reason: "command", topics: all.filter { $0 != "eventi" }),
                    reply: "已取消订阅"),
            ]
        }
    }

    @Test(
        "a citizen subscribes, picks a topic and a language, and leaves: the database follows each step and each reply arrives in their language",
        arguments: [(Channel.whatsapp, 0), (.telegram, 10), (.wechat, 20)]
    )
    func citizenLifecycle(channel: Channel, base: Int) async throws {
        let town = try await Town.start("it_subs_\(channel.rawValue)", base: base, channels: [channel])
        let address = ProviderSimulator.citizenAddress(channel: channel, index: 1)
        for (number, step) in Self.script(channel).enumerated() {
            let report = try await town.play(channel, step.action, text: step.text, topic: step.topic, first: 1)
            #expect(report.accepted == 1, "step \(number): \(report.statuses)")
            let replies = try await town.waitForReplies(channel, to: address, count: number + 1)
            #expect(
                replies.count == number + 1, "step \(number): \(replies)\nregistry:\n\(town.registry.log.suffix(2000))")
            if let expected = step.reply, let last = replies.last {
                #expect(last.hasPrefix(expected), "step \(number): \(last)")
            }
            #expect(try await town.subscription(channel, address) == step.expected, "step \(number)")
        }
        // Nothing more arrives.
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await town.replies(channel, to: address).count == Self.script(channel).count)
        await town.stop()
    }

    @Test("WeChat unfollow and Telegram block leave silently; a former subscriber comes back with their preferences")
    func leaveWithoutCommand() async throws {
        let town = try await Town.start("it_subs_leave", base: 30, channels: [.telegram, .wechat])
        let openID = ProviderSimulator.citizenAddress(channel: .wechat, index: 5)
        try await town.play(.wechat, .subscribe, first: 5)
        _ = try await town.waitForReplies(.wechat, to: openID, count: 1)
        try await town.play(.wechat, .unsubscribe, first: 5)
        let left = await eventually(timeout: .seconds(10)) {
            (try? await town.subscription(.wechat, openID))?.reason == "unfollowed"
        }
        #expect(left)
        #expect(try await town.subscription(.wechat, openID)?.active == false)

        let chat = ProviderSimulator.citizenAddress(channel: .telegram, index: 5)
        try await town.play(.telegram, .subscribe, topic: "farmacie", first: 5)
        _ = try await town.waitForReplies(.telegram, to: chat, count: 1)
        try await town.play(.telegram, .block, first: 5)
        let blocked = await eventually(timeout: .seconds(10)) {
            (try? await town.subscription(.telegram, chat))?.reason == "blocked"
        }
        #expect(blocked)
        try await town.play(.telegram, .unblock, first: 5)
        try await town.play(.telegram, .subscribe, first: 5)
        let back = try await town.waitForReplies(.telegram, to: chat, count: 2)
        #expect(back.last?.hasPrefix("Bentornato!") == true, "\(back)")
        #expect(
            try await town.subscription(.telegram, chat) == .init(active: true, language: "it", topics: ["farmacie"]))
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await town.replies(.wechat, to: openID).count == 1)
        #expect(try await town.replies(.telegram, to: chat).count == 2)
        await town.stop()
    }

    @Test(
        "forged signatures, missing secrets, malformed JSON and XML, oversized bodies: a clear 4xx, nothing published")
    func refusals() async throws {
        let town = try await Town.start(
            "it_subs_refusals", base: 40, channels: [], ingestEnvironment: ["INGEST_MAX_BODY_BYTES": "4096"]
        )
        // The registry is stopped so that anything published would stay in its queue.
        town.registry.signal(SIGTERM)
        _ = await town.registry.waitForExit()
        let secret = "sim-whatsapp-app-secret"
        let valid = Array(
            #"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"390610000000","phone_number_id":"1065403"},"messages":[{"from":"393470009999","id":"wamid.REFUSALS","timestamp":"1767261600","type":"text","text":{"body":"ATTIVA ISCRIZIONE"}}]}}]}]}"#
                .utf8
        )
        let malformed = Array(#"{"object":"whatsapp_business_account","entry":[{"#.utf8)
        let oversized = Array(
            (#"{"object":"whatsapp_business_account","entry":[],"pad":""# + String(repeating: "x", count: 8000) + #""}"#)
                .utf8
        )
        let telegramUpdate = Array(
            #"{"update_id":1,"message":{"message_id":1,"from":{"id":42,"is_bot":false,"first_name":"A"},"chat":{"id":42,"type":"private"},"date":1767261600,"text":"/start"}}"#
                .utf8
        )
        let wechatQuery = { (token: String) -> String in
            "?signature=\(WeChat.signature(token: token, timestamp: "1767261600", nonce: "77"))&timestamp=1767261600&nonce=77"
        }
        let cases: [(String, String, [UInt8], [String: String], Int, String)] = [
            (
                "WhatsApp forged signature", "/webhooks/whatsapp", valid,
                ["X-Hub-Signature-256": WhatsApp.signature(body: valid, appSecret: "not-the-secret")], 401,
                "bad_signature"
            ),
            ("WhatsApp no signature", "/webhooks/whatsapp", valid, [:], 401, "bad_signature"),
            (
                "WhatsApp signature of another body", "/webhooks/whatsapp", valid,
                ["X-Hub-Signature-256": WhatsApp.signature(body: malformed, appSecret: secret)], 401, "bad_signature"
            ),
            (
                "WhatsApp malformed JSON", "/webhooks/whatsapp", malformed,
                ["X-Hub-Signature-256": WhatsApp.signature(body: malformed, appSecret: secret)], 400, "malformed_body"
            ),
            (
                "WhatsApp oversized body", "/webhooks/whatsapp", oversized,
                ["X-Hub-Signature-256": WhatsApp.signature(body: oversized, appSecret: secret)], 413, "body_too_large"
            ),
            ("Telegram no secret header", "/webhooks/telegram", telegramUpdate, [:], 401, "bad_secret"),
            (
                "Telegram wrong secret", "/webhooks/telegram", telegramUpdate,
                ["X-Telegram-Bot-Api-Secret-Token": "guess"], 401, "bad_secret"
            ),
            (
                "Telegram malformed JSON", "/webhooks/telegram", Array("{\"update_id\":".utf8),
                ["X-Telegram-Bot-Api-Secret-Token": "sim-telegram-secret"], 400, "malformed_body"
            ),
            (
                "Telegram oversized body", "/webhooks/telegram", oversized,
                ["X-Telegram-Bot-Api-Secret-Token": "sim-telegram-secret"], 413, "body_too_large"
            ),
            (
                "WeChat forged signature", "/webhooks/wechat" + wechatQuery("not-the-token"),
                Array("<xml><ToUserName>a</ToUserName></xml>".utf8), [:], 401, "bad_signature"
            ),
            ("WeChat no signature", "/webhooks/wechat", Array("<xml></xml>".utf8), [:], 401, "bad_signature"),
            (
                "WeChat malformed XML", "/webhooks/wechat" + wechatQuery("sim-wechat-token"),
                Array("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName>".utf8), [:], 400, "malformed_body"
            ),
            (
                "WeChat XML missing fields", "/webhooks/wechat" + wechatQuery("sim-wechat-token"),
                Array("<xml><MsgType>text</MsgType></xml>".utf8), [:], 400, "malformed_body"
            ),
            (
                "WeChat oversized body", "/webhooks/wechat" + wechatQuery("sim-wechat-token"), oversized, [:], 413,
                "body_too_large"
            ),
        ]
        for (name, path, body, headers, status, code) in cases {
            let (got, answer) = try await town.post(path, body: body, headers: headers)
            #expect(got == status, "\(name): \(answer)")
            #expect(answer.contains("\"error\":\"\(code)\""), "\(name): \(answer)")
        }
        // Handshakes: the WhatsApp verify token and the WeChat echo.
        #expect(
            try await town.get("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=42").0 == 403
        )
        #expect(
            try await town.get(
                "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=sim-whatsapp-verify-token&hub.challenge=42")
                == (200, "42")
        )
        #expect(
            try await town.get("/webhooks/wechat" + wechatQuery("sim-wechat-token") + "&echostr=hello") == (
                200, "hello"
            ))
        #expect(try await town.get("/webhooks/wechat" + wechatQuery("wrong") + "&echostr=hello").0 == 401)
        // The admin API wants a token.
        #expect(try await town.get("/v1/stats").0 == 401)
        #expect(try await town.get("/v1/stats", headers: ["Authorization": "Bearer nope"]).0 == 401)

        #expect(try await town.harness.ready(BanditoreTopology.registryCommands) == 0)
        // The same request, signed: accepted and published (so the checks above could have seen a publish).
        let accepted = try await town.post(
            "/webhooks/whatsapp", body: valid,
            headers: ["X-Hub-Signature-256": WhatsApp.signature(body: valid, appSecret: secret)]
        )
        #expect(accepted.0 == 200)
        let published = await eventually(timeout: .seconds(5)) {
            (try? await town.harness.ready(BanditoreTopology.registryCommands)) == 1
        }
        #expect(published)
        let subscribers = try await town.harness.database.query("SELECT count(*) FROM subscribers").rows[0]
            .decode(Int.self, at: 0)
        #expect(subscribers == 0)
        await town.stop()
    }

    @Test("the same webhook delivered three times on each channel: one effect, one reply")
    func replayedWebhooks() async throws {
        let town = try await Town.start("it_subs_replay", base: 50)
        let phone = "393470007777"
        let whatsapp = Array(
            #"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"390610000000","phone_number_id":"1065403"},"messages":[{"from":"393470007777","id":"wamid.REPLAY1","timestamp":"1767261600","type":"text","text":{"body":"ATTIVA ISCRIZIONE"}}]}}]}]}"#
                .utf8
        )
        let telegram = Array(
            #"{"update_id":770001,"message":{"message_id":1,"from":{"id":7777,"is_bot":false,"first_name":"A","language_code":"en"},"chat":{"id":7777,"type":"private"},"date":1767261600,"text":"/start","entities":[{"offset":0,"length":6,"type":"bot_command"}]}}"#
                .utf8
        )
        let openID = "oREPLAY000000000000000007777"
        let wechat = Array(
            "<xml><ToUserName><![CDATA[gh_1a2b3c4d5e6f]]></ToUserName><FromUserName><![CDATA[\(openID)]]></FromUserName><CreateTime>\(Int(Date().timeIntervalSince1970))</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[]]></EventKey></xml>"
                .utf8
        )
        // The simulator has to know these citizens (a WeChat follower, a WhatsApp window open) to take the replies:
        // they act once towards an address that does not count (the simulator itself answers 404).
        _ = try await town.harness.simCall(
            "POST", "/sim/citizens",
            body:
                #"{"channel":"wechat","action":"subscribe","addresses":["\#(openID)"],"ingestURL":"\#(town.harness.simURL)"}"#
        )
        _ = try await town.harness.simCall(
            "POST", "/sim/citizens",
            body:
                #"{"channel":"whatsapp","action":"text","text":"ciao","addresses":["\#(phone)"],"ingestURL":"\#(town.harness.simURL)"}"#
        )
        let wechatQuery =
            "?signature=\(WeChat.signature(token: "sim-wechat-token", timestamp: "1767261600", nonce: "5"))&timestamp=1767261600&nonce=5"
        for _ in 0..<3 {
            #expect(
                try await town.post(
                    "/webhooks/whatsapp", body: whatsapp,
                    headers: [
                        "X-Hub-Signature-256": WhatsApp.signature(body: whatsapp, appSecret: "sim-whatsapp-app-secret")
                    ]
                ).0 == 200
            )
            #expect(
                try await town.post(
                    "/webhooks/telegram", body: telegram,
                    headers: ["X-Telegram-Bot-Api-Secret-Token": "sim-telegram-secret"]
                ).0 == 200
            )
            #expect(try await town.post("/webhooks/wechat" + wechatQuery, body: wechat).0 == (200))
        }
        for (channel, address) in [(Channel.whatsapp, phone), (.telegram, "7777"), (.wechat, openID)] {
            let replies = try await town.waitForReplies(channel, to: address, count: 1)
            #expect(replies.count == 1, "\(channel): \(replies)")
        }
        #expect(try await town.subscription(.telegram, "7777")?.language == "en")
        try await Task.sleep(for: .seconds(1))
        for (channel, address) in [(Channel.whatsapp, phone), (.telegram, "7777"), (.wechat, openID)] {
            #expect(try await town.replies(channel, to: address).count == 1, "\(channel)")
            #expect(try await town.subscription(channel, address)?.active == true, "\(channel)")
        }
        let metrics = await town.registry.get("/metrics")?.body ?? ""
        #expect(metrics.contains("banditore_registry_duplicates_total 6"), "\(metrics)")
        await town.stop()
    }

    @Test(
        "WhatsApp statuses reach the deliveries: delivered, and failed for a number that blocked us, which is deactivated"
    )
    func whatsappStatuses() async throws {
        let town = try await Town.start(
            "it_subs_statuses", base: 60, channels: [.whatsapp], simEnvironment: ["SIM_STATUS_WEBHOOKS": "true"]
        )
        let addresses = (0..<20).map { ProviderSimulator.citizenAddress(channel: .whatsapp, index: 100 + $0) }
        try await town.play(.whatsapp, .subscribe, first: 100, count: 20)
        let registered = await eventually(timeout: .seconds(20)) {
            let row = try? await town.harness.database.query("SELECT count(*) FROM subscribers WHERE active").first
            return (try? row?.decode(Int.self, at: 0)) == 20
        }
        #expect(registered)
        try await town.play(.whatsapp, .block, first: 100, count: 2)
        let bulletin = UUID()
        let recipients = try await DeliveryFixtures.seed(
            town.harness.database, channel: .whatsapp, addresses: addresses, bulletinID: bulletin
        )
        try await DeliveryFixtures.publishJobs(
            town.harness.amqp, channel: .whatsapp, recipients: recipients, bulletinID: bulletin
        )
        var states: [String: Int] = [:]
        let settled = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
            states = (try? await town.harness.states(bulletin)) ?? [:]
            // The two who blocked us: failed (131026) if the bulletin reaches them first, skipped if the failed
            // status of their subscription's reply has deactivated them already (the bulletin waits 6 s after that
            // reply for the per-user pace).
            return states["failed", default: 0] + states["skipped", default: 0] == 2
                && states["delivered", default: 0] + states["read", default: 0] == 18
        }
        #expect(settled, "\(states)")
        let inactive = await eventually(timeout: .seconds(10)) {
            let row = try? await town.harness.database.query(
                "SELECT count(*) FROM subscribers WHERE NOT active AND inactive_reason = 'unreachable'"
            ).first
            return (try? row?.decode(Int.self, at: 0)) == 2
        }
        #expect(inactive)
        for address in addresses.prefix(2) {
            #expect(try await town.subscription(.whatsapp, address)?.active == false)
        }
        await town.stop()
    }

    @Test("/v1/stats and `banditore subscribers` count per channel, language and topic")
    func stats() async throws {
        let town = try await Town.start("it_subs_stats", base: 70, channels: [])
        try await town.play(.whatsapp, .subscribe, first: 0, count: 5)
        try await town.play(.telegram, .subscribe, topic: "scuola", language: "zh", first: 0, count: 3)
        try await town.play(.wechat, .subscribe, first: 0, count: 2)
        try await town.play(.wechat, .unsubscribe, first: 0, count: 1)
        let done = await eventually(timeout: .seconds(20)) {
            let row = try? await town.harness.database.query(
                "SELECT count(*), count(*) FILTER (WHERE NOT active) FROM subscribers"
            ).first
            return (try? row?.decode(Int.self, at: 0)) == 10 && (try? row?.decode(Int.self, at: 1)) == 1
        }
        #expect(done)
        let (status, body) = try await town.get("/v1/stats", headers: ["Authorization": "Bearer test-admin-token"])
        #expect(status == 200, "\(body)")
        let stats = try JSONDecoder().decode(SubscriberStats.self, from: Data(body.utf8))
        #expect(stats.total == 10)
        #expect(stats.active == 9)
        #expect(stats.byChannel["whatsapp"] == .init(active: 5, inactive: 0))
        #expect(stats.byChannel["telegram"] == .init(active: 3, inactive: 0))
        #expect(stats.byChannel["wechat"] == .init(active: 1, inactive: 1))
        #expect(stats.byLanguage == ["it": 6, "zh": 3, "en": 0])
        #expect(stats.byTopic["scuola"] == 9)
        #expect(stats.byTopic["farmacie"] == 6)

        let banditore = ServiceProcess.binaryDirectory.appending(path: "banditore").path
        let cli = try await runCLI(banditore, ["subscribers", "--database-url", town.harness.servers.databaseURL], [:])
        #expect(cli.status == 0, "\(cli.output)")
        #expect(cli.output.contains("whatsapp") && cli.output.contains("scuola"), "\(cli.output)")
        let json = try await runCLI(
            banditore, ["subscribers", "--json", "--database-url", town.harness.servers.databaseURL], [:]
        )
        #expect(try JSONDecoder().decode(SubscriberStats.self, from: Data(json.output.utf8)) == stats)
        await town.stop()
    }

    @Test(
        "a backlog of commands applied many to a transaction: each citizen's in order, once, with one reply each; a poison message and a command the database refuses go to the dead-letter queue"
    )
    func backlogInBatches() async throws {
        var town = try await Town.start("it_subs_backlog", base: 110, channels: [.telegram])
        let registryPort = town.registry.port
        #expect(await town.harness.terminate(town.registry) == 0)

        // With the registry stopped, 150 citizens subscribe and then ask for English: 300 commands wait.
        let subscribed = try await town.play(.telegram, .subscribe, first: 0, count: 150)
        let english = try await town.play(.telegram, .text, text: "/lingua inglese", first: 0, count: 150)
        #expect(subscribed.accepted == 150 && english.accepted == 150, "\(subscribed) \(english)")
        let citizens = (0..<150).map { ProviderSimulator.citizenAddress(channel: .telegram, index: $0) }
        // One citizen the database refuses (a trigger stands for any constraint), and a message no one can read.
        let refused = citizens[70]
        try await town.harness.database.query(
            """
            CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.address = '\(unescaped: refused)' THEN RAISE EXCEPTION 'refused for the test'; END IF;
                RETURN NEW;
            END $$
            """
        )
        try await town.harness.database.query(
            "CREATE TRIGGER refuse_one BEFORE INSERT ON subscribers FOR EACH ROW EXECUTE FUNCTION refuse_one()"
        )
        try await town.harness.amqp.publishConfirmed(
            .json(Array("{not json".utf8), type: CitizenCommand.messageType, messageID: "poison-1"),
            exchange: BanditoreTopology.commandsExchange, routingKey: "command.subscribe"
        )
        #expect(try await town.harness.ready(BanditoreTopology.registryCommands) == 301)

        town = Town(
            harness: town.harness, ingest: town.ingest,
            registry: try await town.harness.service("banditore-registry", port: registryPort),
            dispatchers: town.dispatchers
        )
        let others = citizens.filter { $0 != refused }
        let done = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            let row = try? await town.harness.database.query(
                "SELECT count(*) FROM subscribers WHERE active AND language = 'en' AND channel = 'telegram'"
            ).first
            return (try? row?.decode(Int.self, at: 0)) == others.count
        }
        #expect(done)
        let dead = BanditoreTopology.deadQueue(BanditoreTopology.registryCommands)
        #expect(await eventually(timeout: .seconds(30)) { (try? await town.harness.ready(dead)) == 2 })
        #expect(try await town.subscription(.telegram, refused) == nil)

        // One reply to each command: Italian for the subscription; English for the language, which it could only be
        // if the subscription came first (the dispatcher may send a citizen's two replies in either order).
        _ = await eventually(timeout: .seconds(90), every: .milliseconds(500)) {
            guard let messages = try? await town.harness.simMessages(.telegram) else { return false }
            let counts = Dictionary(grouping: messages, by: \.recipient).mapValues(\.count)
            return others.allSatisfy { counts[$0, default: 0] >= 2 } && counts[refused, default: 0] >= 1
        }
        try await Task.sleep(for: .seconds(2))  // a second reply to anyone, if one were sent, has had time to arrive
        let replies = Dictionary(grouping: try await town.harness.simMessages(.telegram), by: \.recipient)
        for citizen in others {
            let texts = replies[citizen]?.map(\.text) ?? []
            #expect(texts.count == 2, "\(citizen): \(texts)")
            #expect(texts.filter { $0.hasPrefix("Iscrizione attivata.") }.count == 1, "\(citizen): \(texts)")
            #expect(texts.filter { $0.hasPrefix("Language set: English.") }.count == 1, "\(citizen): \(texts)")
        }
        #expect(replies[refused]?.count == 1, "the refused citizen's language command: not subscribed")

        let metrics = await town.registry.get("/metrics")?.body ?? ""
        let commands = Self.metric(metrics, "banditore_registry_commands_total")
        let transactions = Self.metric(metrics, "banditore_registry_transactions_total")
        #expect(commands == 299, "\(metrics)")
        #expect(
            transactions > 0 && transactions * 2 < commands, "\(transactions) transactions for \(commands) commands")
        #expect(Self.metric(metrics, "banditore_registry_poison_total") == 2)
        await town.stop()
    }

    static func metric(_ text: String, _ name: String) -> Int {
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Int(Double(line.split(separator: " ").last ?? "") ?? -1)
        }
        return -1
    }

    @Test(
        "the broker stops: ingest answers 503 and publishes nothing; it comes back: the provider's retry goes through")
    func brokerDown() async throws {
        try await PrivateServer.with(.rabbitmq, portBase: 5796) { broker in
            try await Self.webhooksAcrossBrokerStop(broker)
        }
    }

    private static func webhooksAcrossBrokerStop(_ broker: PrivateServer) async throws {
        let harness = try await DispatchHarness.make("it_subs_broker", simPort: 19590)
        let amqp = try await AMQPConnection.connect(url: broker.url, logger: harness.logger)
        try await amqp.declare(BanditoreTopology.all)
        await amqp.close()
        let environment = ["AMQP_URL": broker.url]
        let ingest = try await harness.service("banditore-ingest", port: 18590, environment: environment)
        let registry = try await harness.service("banditore-registry", port: 18591, environment: environment)
        let body = Array(
            #"{"update_id":880001,"message":{"message_id":1,"from":{"id":8888,"is_bot":false,"first_name":"A"},"chat":{"id":8888,"type":"private"},"date":1767261600,"text":"/start","entities":[{"offset":0,"length":6,"type":"bot_command"}]}}"#
                .utf8
        )
        func post() async throws -> (Int, String, String?) {
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(ingest.port)/webhooks/telegram")!)
            request.httpMethod = "POST"
            request.httpBody = Data(body)
            request.setValue("sim-telegram-secret", forHTTPHeaderField: "X-Telegram-Bot-Api-Secret-Token")
            let (data, response) = try await URLSession.shared.data(for: request)
            let http = response as? HTTPURLResponse
            return (
                http?.statusCode ?? 0, String(decoding: data, as: UTF8.self),
                http?.value(forHTTPHeaderField: "Retry-After")
            )
        }
        try await broker.stop()
        let refused = await eventually(timeout: .seconds(10)) { (try? await post())?.0 == 503 }
        #expect(refused)
        let answer = try await post()
        #expect(answer.0 == 503)
        #expect(answer.1.contains("broker_unavailable"))
        #expect(answer.2 == "5")
        #expect(await ingest.get("/readyz")?.status == 503)
        try await broker.start()
        let ready = await eventually(timeout: .seconds(30)) { await ingest.get("/readyz")?.status == 200 }
        #expect(ready, "\(ingest.log.suffix(2000))")
        // The provider retries the same update: it is taken now, once.
        #expect(try await post().0 == 200)
        #expect(try await post().0 == 200)
        let registered = await eventually(timeout: .seconds(20)) {
            let row = try? await harness.database.query(
                "SELECT count(*) FROM subscribers WHERE channel = 'telegram' AND address = '8888' AND active"
            ).first
            return (try? row?.decode(Int.self, at: 0)) == 1
        }
        #expect(registered, "\(registry.log.suffix(2000))")
        // The reply waits in the Telegram replies queue (no dispatcher here): exactly one.
        let replies = await eventually(timeout: .seconds(10)) {
            let connection = try? await AMQPConnection.connect(url: broker.url, logger: harness.logger)
            let count = try? await connection?.inspectQueue(BanditoreTopology.dispatchQueue(.telegram, .reply))
                .messageCount
            await connection?.close()
            return count == 1
        }
        #expect(replies)
        await harness.stop([ingest, registry])
    }
}
