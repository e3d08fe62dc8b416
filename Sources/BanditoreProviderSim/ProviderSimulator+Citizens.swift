import AsyncHTTPClient
import BanditoreChannels
import BanditoreCore
import Foundation

import struct NIOCore.ByteBuffer
import struct NIOCore.TimeAmount

/// Citizens: the simulator sends their messages to ingest as the providers would, signed, retried on failure.
extension ProviderSimulator {
    /// What citizens do.
    public enum CitizenAction: String, Sendable, Codable {
        /// WhatsApp `ATTIVA ISCRIZIONE`, Telegram `/start` (with `topic` as its parameter), WeChat follow.
        case subscribe
        /// WhatsApp `DISATTIVA ISCRIZIONE`, Telegram `/stop`, WeChat unfollow.
        case unsubscribe
        /// A text message: `text` (a topic or language command, or anything else).
        case text
        /// Telegram: block the bot (`my_chat_member` kicked); WhatsApp: block the number (no webhook).
        case block
        /// Telegram: unblock the bot (`my_chat_member` member).
        case unblock
    }

    /// `POST /sim/citizens`: who does what.
    public struct PlayRequest: Sendable, Codable {
        public var channel: Channel
        public var action: CitizenAction
        public var text: String?
        /// Telegram `/start <topic>`.
        public var topic: String?
        /// Telegram `language_code` (default `it`).
        public var language: String?
        /// How many citizens, numbered from `first` (addresses from ``citizenAddress(channel:index:)``).
        public var count: Int?
        public var first: Int?
        /// Or these addresses.
        public var addresses: [String]?
        /// Webhooks in flight at once (default 16).
        public var concurrency: Int?
        /// Share of webhooks delivered a second time, as providers do.
        public var duplicateShare: Double?
        /// Ingest's base URL (default: the configured one).
        public var ingestURL: String?

        public init(
            channel: Channel, action: CitizenAction, text: String? = nil, topic: String? = nil,
            language: String? = nil, count: Int? = nil, first: Int? = nil, addresses: [String]? = nil,
            concurrency: Int? = nil, duplicateShare: Double? = nil, ingestURL: String? = nil
        ) {
            self.channel = channel
            self.action = action
            self.text = text
            self.topic = topic
            self.language = language
            self.count = count
            self.first = first
            self.addresses = addresses
            self.concurrency = concurrency
            self.duplicateShare = duplicateShare
            self.ingestURL = ingestURL
        }
    }

    /// What happened.
    public struct PlayReport: Sendable, Codable, Hashable {
        public struct Latency: Sendable, Codable, Hashable {
            public var p50: Double
            public var p90: Double
            public var p99: Double
            public var max: Double
        }

        public var channel: Channel
        public var action: CitizenAction
        public var citizens: Int
        /// Citizens whose webhook was answered 2xx (after retries).
        public var accepted: Int
        public var failed: Int
        /// Every HTTP answer by status (`error` for no answer).
        public var statuses: [String: Int]
        public var retries: Int
        public var duplicatesSent: Int
        /// Citizens that do nothing visible to ingest (WhatsApp block).
        public var silent: Int
        public var seconds: Double
        /// Accepted webhooks per second.
        public var perSecond: Double
        /// Of answered requests, in milliseconds.
        public var latencyMs: Latency
        public var addresses: [String]
    }

    /// The address of the simulator's citizen number `index` on a channel.
    public static func citizenAddress(channel: Channel, index: Int) -> String {
        switch channel {
        case .whatsapp:
            let digits = String(index % 10_000_000)
            return "39347" + String(repeating: "0", count: 7 - digits.count) + digits
        case .telegram:
            return String(5_000_000_000 + Int64(index))
        case .wechat:
            let digits = String(index, radix: 36)
            return "oSIM" + String(repeating: "0", count: max(0, 24 - digits.count)) + digits
        }
    }

    /// Plays the citizens and reports.
    public func play(_ request: PlayRequest) async -> PlayReport {
        let addresses =
            request.addresses
            ?? (0..<max(0, request.count ?? 1)).map {
                Self.citizenAddress(channel: request.channel, index: (request.first ?? 0) + $0)
            }
        let base = request.ingestURL ?? configuration.ingestURL
        let start = ContinuousClock.now
        var latencies: [Double] = []
        var statuses: [String: Int] = [:]
        var accepted = 0
        var retries = 0
        var duplicates = 0
        var silent = 0
        let concurrency = max(1, request.concurrency ?? 16)

        await withTaskGroup(of: Attempt.self) { group in
            var next = 0
            func add() {
                let address = addresses[next]
                next += 1
                group.addTask {
                    guard let webhook = self.webhook(for: request, address: address, base: base) else {
                        return Attempt(silent: true)
                    }
                    var attempt = await self.deliver(webhook)
                    if attempt.ok, let share = request.duplicateShare, share > 0,
                        self.state.withLock({ $0.rng.chance(share) })
                    {
                        let again = await self.deliver(webhook)
                        attempt.duplicate = true
                        attempt.statuses += again.statuses
                        attempt.latencies += again.latencies
                    }
                    return attempt
                }
            }
            while next < addresses.count && next < concurrency { add() }
            for await attempt in group {
                if attempt.silent { silent += 1 }
                if attempt.ok || attempt.silent { accepted += 1 }
                retries += max(0, attempt.statuses.count - 1 - (attempt.duplicate ? 1 : 0))
                if attempt.duplicate { duplicates += 1 }
                for status in attempt.statuses { statuses[status, default: 0] += 1 }
                latencies += attempt.latencies
                if next < addresses.count { add() }
            }
        }
        let elapsed = start.duration(to: .now)
        let seconds = elapsed.inSeconds
        latencies.sort()
        func percentile(_ p: Double) -> Double {
            latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]
        }
        return PlayReport(
            channel: request.channel, action: request.action, citizens: addresses.count, accepted: accepted,
            failed: addresses.count - accepted, statuses: statuses, retries: retries, duplicatesSent: duplicates,
            silent: silent, seconds: seconds, perSecond: seconds > 0 ? Double(accepted) / seconds : 0,
            latencyMs: .init(
                p50: percentile(0.5), p90: percentile(0.9), p99: percentile(0.99), max: latencies.last ?? 0),
            addresses: Array(addresses.prefix(20))
        )
    }

    struct Attempt: Sendable {
        var ok = false
        var silent = false
        var duplicate = false
        var statuses: [String] = []
        var latencies: [Double] = []
    }

    struct Webhook: Sendable {
        var url: String
        var headers: [(String, String)]
        var body: [UInt8]
        var attempts: Int
        var timeout: TimeAmount
    }

    /// Sends one webhook, retrying non-2xx answers and failures as the provider does.
    func deliver(_ webhook: Webhook) async -> Attempt {
        var attempt = Attempt()
        var request = HTTPClientRequest(url: webhook.url)
        request.method = .POST
        for (name, value) in webhook.headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: webhook.body))
        for n in 1...webhook.attempts {
            let started = ContinuousClock.now
            do {
                let response = try await client.execute(request, timeout: webhook.timeout)
                _ = try? await response.body.collect(upTo: 1 << 20)
                attempt.latencies.append(started.duration(to: .now).inMilliseconds)
                attempt.statuses.append(String(response.status.code))
                if (200..<300).contains(response.status.code) {
                    attempt.ok = true
                    return attempt
                }
            } catch {
                attempt.statuses.append("error")
            }
            if n < webhook.attempts { try? await Task.sleep(for: .milliseconds(200 * n)) }
        }
        return attempt
    }

    /// Builds the provider's webhook for a citizen's action, and updates what the simulator knows of the citizen
    /// (windows open, blocked or not). Nil when the action sends nothing.
    func webhook(for request: PlayRequest, address: String, base: String) -> Webhook? {
        let now = now()
        let unix = Int(Date().timeIntervalSince1970)
        let key = "\(request.channel.rawValue)|\(address)"
        let serial: Int = state.withLock { s in
            s.recorder.count(request.channel) { $0.webhooksSent += 1 }
            switch request.action {
            case .block:
                s.blocked[request.channel, default: []].insert(address)
            case .unblock:
                s.blocked[request.channel]?.remove(address)
            case .unsubscribe where request.channel == .wechat:
                s.blocked[.wechat, default: []].insert(address)
            case .subscribe where request.channel == .wechat:
                s.blocked[.wechat]?.remove(address)
                s.lastInbound[key] = now
                s.windowLength[key] = 60
                s.repliesLeft[key] = 3
            case .subscribe, .unsubscribe, .text:
                if request.action == .subscribe { s.blocked[request.channel]?.remove(address) }
                s.lastInbound[key] = now
                s.windowLength[key] = 48 * 3600
                s.repliesLeft[key] = s.behaviour.wechatRepliesPerMessage
            }
            return s.nextCounter()
        }
        // Unique across simulator restarts, so that ingest's dedupe never mistakes a new message for an old one.
        let uniqueID = Int64(Date().timeIntervalSince1970 * 1000) * 1000 + Int64(serial % 1000)
        switch request.channel {
        case .whatsapp:
            let text: String
            switch request.action {
            case .subscribe: text = "ATTIVA ISCRIZIONE"
            case .unsubscribe: text = "DISATTIVA ISCRIZIONE"
            case .text: text = request.text ?? "Buongiorno"
            case .block, .unblock: return nil
            }
            let body = Array(
                whatsappInbound(from: address, id: "wamid.SIMIN\(instance)x\(serial)", text: text, unix: unix).utf8)
            return Webhook(
                url: base + "/webhooks/whatsapp",
                headers: [
                    ("Content-Type", "application/json"),
                    ("X-Hub-Signature-256", WhatsApp.signature(body: body, appSecret: configuration.whatsappAppSecret)),
                ],
                body: body, attempts: 3, timeout: .seconds(10)
            )
        case .telegram:
            let update: String
            switch request.action {
            case .subscribe:
                update = telegramMessage(
                    updateID: uniqueID, chat: address, text: "/start" + (request.topic.map { " \($0)" } ?? ""),
                    language: request.language ?? "it", serial: serial, unix: unix
                )
            case .unsubscribe:
                update = telegramMessage(
                    updateID: uniqueID, chat: address, text: "/stop", language: request.language ?? "it",
                    serial: serial, unix: unix
                )
            case .text:
                update = telegramMessage(
                    updateID: uniqueID, chat: address, text: request.text ?? "ciao", language: request.language ?? "it",
                    serial: serial, unix: unix
                )
            case .block, .unblock:
                update = telegramMembership(
                    updateID: uniqueID, chat: address, status: request.action == .block ? "kicked" : "member",
                    unix: unix
                )
            }
            return Webhook(
                url: base + "/webhooks/telegram",
                headers: [
                    ("Content-Type", "application/json"),
                    ("X-Telegram-Bot-Api-Secret-Token", configuration.telegramWebhookSecret),
                ],
                body: Array(update.utf8), attempts: 3, timeout: .seconds(10)
            )
        case .wechat:
            let inner: String
            switch request.action {
            case .subscribe, .unsubscribe:
                inner =
                    "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[\(request.action == .subscribe ? "subscribe" : "unsubscribe")]]></Event><EventKey><![CDATA[]]></EventKey>"
            case .text:
                inner =
                    "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[\(cdata(request.text ?? "你好"))]]></Content><MsgId>\(uniqueID)</MsgId>"
            case .block, .unblock:
                return nil
            }
            let xml =
                "<xml><ToUserName><![CDATA[\(configuration.wechatAccountID)]]></ToUserName>"
                + "<FromUserName><![CDATA[\(address)]]></FromUserName><CreateTime>\(unix)</CreateTime>\(inner)</xml>"
            let timestamp = String(unix)
            let nonce = String(serial)
            let signature = WeChat.signature(token: configuration.wechatToken, timestamp: timestamp, nonce: nonce)
            return Webhook(
                url: base
                    + "/webhooks/wechat?signature=\(signature)&timestamp=\(timestamp)&nonce=\(nonce)&openid=\(address)",
                headers: [("Content-Type", "text/xml; charset=utf-8")],
                body: Array(xml.utf8), attempts: 3, timeout: .seconds(5)
            )
        }
    }

    private func whatsappInbound(from: String, id: String, text: String, unix: Int) -> String {
        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"
            + JSONText.quote(configuration.whatsappBusinessAccountID)
            + ",\"changes\":[{\"field\":\"messages\",\"value\":{\"messaging_product\":\"whatsapp\","
            + "\"metadata\":{\"display_phone_number\":\(JSONText.quote(configuration.whatsappDisplayPhoneNumber)),"
            + "\"phone_number_id\":\(JSONText.quote(configuration.whatsappPhoneNumberID))},"
            + "\"contacts\":[{\"profile\":{\"name\":\"Cittadino\"},\"wa_id\":\(JSONText.quote(from))}],"
            + "\"messages\":[{\"from\":\(JSONText.quote(from)),\"id\":\(JSONText.quote(id)),"
            + "\"timestamp\":\"\(unix)\",\"type\":\"text\",\"text\":{\"body\":\(JSONText.quote(text))}}]}}]}]}"
    }

    private func telegramMessage(updateID: Int64, chat: String, text: String, language: String, serial: Int, unix: Int)
        -> String
    {
        var entities = ""
        if text.hasPrefix("/") {
            let length = text.prefix { $0 != " " }.utf16.count
            entities = ",\"entities\":[{\"offset\":0,\"length\":\(length),\"type\":\"bot_command\"}]"
        }
        return "{\"update_id\":\(updateID),\"message\":{\"message_id\":\(serial),"
            + "\"from\":{\"id\":\(chat),\"is_bot\":false,\"first_name\":\"Cittadino\","
            + "\"language_code\":\(JSONText.quote(language))},"
            + "\"chat\":{\"id\":\(chat),\"first_name\":\"Cittadino\",\"type\":\"private\"},"
            + "\"date\":\(unix),\"text\":\(JSONText.quote(text))\(entities)}}"
    }

    private func telegramMembership(updateID: Int64, chat: String, status: String, unix: Int) -> String {
        let bot = "{\"id\":\(botID),\"is_bot\":true,\"first_name\":\(JSONText.quote(configuration.telegramBotName))}"
        let old = status == "kicked" ? "member" : "kicked"
        return "{\"update_id\":\(updateID),\"my_chat_member\":{"
            + "\"chat\":{\"id\":\(chat),\"first_name\":\"Cittadino\",\"type\":\"private\"},"
            + "\"from\":{\"id\":\(chat),\"is_bot\":false,\"first_name\":\"Cittadino\"},\"date\":\(unix),"
            + "\"old_chat_member\":{\"user\":\(bot),\"status\":\"\(old)\"},"
            + "\"new_chat_member\":{\"user\":\(bot),\"status\":\"\(status)\"}}}"
    }

    private func cdata(_ text: String) -> String {
        text.replacingOccurrences(of: "]]>", with: "]]]]><![CDATA[>")
    }
}
