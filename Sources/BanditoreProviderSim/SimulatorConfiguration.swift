import BanditoreCore
import Configuration
import Foundation

/// Everything the simulator can be told at start. Read by ``init(reader:)`` from flags and environment variables
/// (`--sim-faults-error-rate 0.2` or `SIM_FAULTS_ERROR_RATE=0.2`); the `behaviour` part can also be changed while it
/// runs with `PUT /sim/settings/{channel}`.
///
/// Credentials use the same keys as ingest and the dispatchers, so one environment lines them all up.
///
/// Its settings, with their environment variables and defaults, are tabled in the README (which
/// `scripts/check-config` holds to the `reader` calls here).
public struct SimulatorConfiguration: Sendable {
    // MARK: Credentials

    public var whatsappPhoneNumberID = "1065403"
    public var whatsappAccessToken = "sim-whatsapp-token"
    public var whatsappAppSecret = "sim-whatsapp-app-secret"
    public var whatsappBusinessAccountID = "1022901"
    public var whatsappDisplayPhoneNumber = "390610000000"
    /// Approved templates and their number of body parameters.
    public var whatsappTemplates: [String: Int] = ["banditore_bulletin": 2]

    public var telegramBotToken = "7770001:sim-telegram-token"
    public var telegramWebhookSecret = "sim-telegram-secret"
    public var telegramBotName = "Comune"

    public var wechatAppID = "wxsim0000000001"
    public var wechatAppSecret = "sim-wechat-app-secret"
    /// The token of the push signature (`sha1(sort(token, timestamp, nonce))`).
    public var wechatToken = "sim-wechat-token"
    public var wechatAccountID = "gh_1a2b3c4d5e6f"
    /// Known template ids; empty accepts any.
    public var wechatTemplates: Set<String> = []

    // MARK: Citizens

    /// Where the citizens' webhooks (and WhatsApp statuses) go: ingest's base URL.
    public var ingestURL = "http://127.0.0.1:8080"
    /// Send WhatsApp `sent`/`delivered`/`failed` statuses to ingest for accepted messages.
    public var statusWebhooks = true

    // MARK: Behaviour

    public var behaviour = Behaviour()
    /// Addresses that blocked the bot / unfollowed, per channel.
    public var blocked: [Channel: Set<String>] = [:]
    /// Addresses that do not exist (not on WhatsApp, chat not found, invalid openid), per channel.
    public var unknown: [Channel: Set<String>] = [:]
    /// Accepted messages kept for inspection; older ones are dropped, counters are not.
    public var recordLimit = 1_000_000
    /// Seed of the simulator's randomness (faults, latency), for repeatable runs.
    public var seed: UInt64?

    public init() {}

    /// What can change while the simulator runs.
    public struct Behaviour: Sendable, Codable, Hashable {
        /// All rate limits on or off (off for throughput benchmarks).
        public var rateLimits = true
        public var whatsapp = ChannelBehaviour(messagesPerSecond: 80)
        public var telegram = ChannelBehaviour(messagesPerSecond: 30)
        public var wechat = ChannelBehaviour(messagesPerSecond: 0)

        public var whatsappPairIntervalSeconds = 6.0
        /// Messages to one user allowed at once before the pair interval applies: 1, strict as WhatsApp may be
        /// (it tolerates bursts at times, never to rely on).
        public var whatsappPairBurst = 1
        public var telegramPaidMessagesPerSecond = 1000.0
        public var telegramChatMessagesPerSecond = 1.0
        /// Messages to one chat allowed at once before its pace applies: 1, strict.
        public var telegramChatBurst = 1
        public var telegramGroupMessagesPerMinute = 20.0

        public var wechatTokenLifetimeSeconds = 7200
        public var wechatTokenOverlapSeconds = 300
        public var wechatTokenDailyQuota = 2000
        public var wechatCustomDailyQuota = 500_000
        public var wechatTemplateDailyQuota = 100_000
        /// Custom messages allowed per citizen message, within 48 h of it.
        public var wechatRepliesPerMessage = 5

        /// WhatsApp reports unreachable recipients (131026) and closed windows (131047) as a `failed` status after
        /// a 200, as the real API usually does; true answers them at once with an error instead.
        public var whatsappFailuresInResponse = false
        /// Free text only within 24 h (WhatsApp) or 48 h (WeChat) of the citizen's last message.
        public var enforceWindows = true
        /// A deterministic share of addresses that blocked the bot / do not exist.
        public var blockedShare = 0.0
        public var unknownShare = 0.0
        /// How long a timeout fault holds the request before answering with a 5xx, and a late answer its success.
        public var timeoutSeconds = 30.0
        /// How long WeChat drops a repeated template send carrying the same `client_msg_id` to the same user.
        public var wechatClientMessageIDWindowSeconds = 600.0

        public init() {}

        public subscript(channel: Channel) -> ChannelBehaviour {
            get {
                switch channel {
                case .whatsapp: whatsapp
                case .telegram: telegram
                case .wechat: wechat
                }
            }
            set {
                switch channel {
                case .whatsapp: whatsapp = newValue
                case .telegram: telegram = newValue
                case .wechat: wechat = newValue
                }
            }
        }
    }

    /// One provider's throughput, faults and latency.
    public struct ChannelBehaviour: Sendable, Codable, Hashable {
        /// Accepted sends per second for the whole account (0: no limit).
        public var messagesPerSecond: Double
        /// Share of sends answered with the provider's transient error (5xx, "system busy").
        public var errorRate = 0.0
        /// Share of sends held for `timeoutSeconds` before an error.
        public var timeoutRate = 0.0
        /// Share of sends accepted (the message is delivered) whose answer is held for `timeoutSeconds`: a client
        /// that gives up and sends again delivers it twice, unless the provider drops the repeat.
        public var lateRate = 0.0
        /// Added to every answer.
        public var latencyMs = 0.0
        /// Up to this much more, uniformly.
        public var latencyJitterMs = 0.0
        /// Share of answers that take `tailMs` longer (a long tail).
        public var tailShare = 0.0
        public var tailMs = 0.0

        public init(messagesPerSecond: Double) {
            self.messagesPerSecond = messagesPerSecond
        }
    }
}

extension SimulatorConfiguration {
    /// Reads the configuration; see the table on the type for the keys.
    public init(reader: ConfigReader) {
        self.init()
        whatsappPhoneNumberID = reader.string(forKey: "whatsapp.phoneNumberId", default: whatsappPhoneNumberID)
        whatsappAccessToken = reader.string(
            forKey: "whatsapp.accessToken", isSecret: true, default: whatsappAccessToken)
        whatsappAppSecret = reader.string(forKey: "whatsapp.appSecret", isSecret: true, default: whatsappAppSecret)
        if let templates = reader.string(forKey: "whatsapp.templates") {
            whatsappTemplates = Self.parseTemplates(templates)
        }
        telegramBotToken = reader.string(forKey: "telegram.botToken", isSecret: true, default: telegramBotToken)
        telegramWebhookSecret = reader.string(
            forKey: "telegram.webhookSecret", isSecret: true, default: telegramWebhookSecret
        )
        wechatAppID = reader.string(forKey: "wechat.appId", default: wechatAppID)
        wechatAppSecret = reader.string(forKey: "wechat.appSecret", isSecret: true, default: wechatAppSecret)
        wechatToken = reader.string(forKey: "wechat.token", isSecret: true, default: wechatToken)
        wechatAccountID = reader.string(forKey: "wechat.accountId", default: wechatAccountID)
        if let templates = reader.string(forKey: "wechat.templates") {
            wechatTemplates = Set(Self.list(templates))
        }
        ingestURL = reader.string(forKey: "ingest.url", default: ingestURL)
        statusWebhooks = reader.bool(forKey: "sim.statusWebhooks", default: statusWebhooks)
        recordLimit = reader.int(forKey: "sim.recordLimit", default: recordLimit)
        seed = reader.int(forKey: "sim.seed").map { UInt64(truncatingIfNeeded: $0) }
        blocked = Self.parseAddresses(reader.string(forKey: "sim.blocked", default: ""))
        unknown = Self.parseAddresses(reader.string(forKey: "sim.unknown", default: ""))

        var b = Behaviour()
        b.rateLimits = reader.bool(forKey: "sim.rateLimits", default: b.rateLimits)
        let errorRate = reader.double(forKey: "sim.faults.errorRate", default: 0)
        let timeoutRate = reader.double(forKey: "sim.faults.timeoutRate", default: 0)
        let lateRate = reader.double(forKey: "sim.faults.lateRate", default: 0)
        let latency = reader.double(forKey: "sim.latency.ms", default: 0)
        let jitter = reader.double(forKey: "sim.latency.jitterMs", default: 0)
        let tailShare = reader.double(forKey: "sim.latency.tailShare", default: 0)
        let tailMs = reader.double(forKey: "sim.latency.tailMs", default: 0)
        for channel in Channel.allCases {
            let key = "sim.\(channel.rawValue)"
            var c = b[channel]
            // WeChat limits API calls, not messages.
            let rateKey = channel == .wechat ? "callsPerSecond" : "messagesPerSecond"
            c.messagesPerSecond = reader.double(forKey: ConfigKey("\(key).\(rateKey)"), default: c.messagesPerSecond)
            c.errorRate = reader.double(forKey: ConfigKey("\(key).errorRate"), default: errorRate)
            c.timeoutRate = reader.double(forKey: ConfigKey("\(key).timeoutRate"), default: timeoutRate)
            c.lateRate = reader.double(forKey: ConfigKey("\(key).lateRate"), default: lateRate)
            c.latencyMs = reader.double(forKey: ConfigKey("\(key).latencyMs"), default: latency)
            c.latencyJitterMs = reader.double(forKey: ConfigKey("\(key).latencyJitterMs"), default: jitter)
            c.tailShare = reader.double(forKey: ConfigKey("\(key).tailShare"), default: tailShare)
            c.tailMs = reader.double(forKey: ConfigKey("\(key).tailMs"), default: tailMs)
            b[channel] = c
        }
        b.whatsappPairIntervalSeconds = reader.double(
            forKey: "sim.whatsapp.pairIntervalSeconds", default: b.whatsappPairIntervalSeconds
        )
        b.whatsappPairBurst = reader.int(forKey: "sim.whatsapp.pairBurst", default: b.whatsappPairBurst)
        b.telegramPaidMessagesPerSecond = reader.double(
            forKey: "sim.telegram.paidMessagesPerSecond", default: b.telegramPaidMessagesPerSecond
        )
        b.telegramChatMessagesPerSecond = reader.double(
            forKey: "sim.telegram.chatMessagesPerSecond", default: b.telegramChatMessagesPerSecond
        )
        b.telegramChatBurst = reader.int(forKey: "sim.telegram.chatBurst", default: b.telegramChatBurst)
        b.telegramGroupMessagesPerMinute = reader.double(
            forKey: "sim.telegram.groupMessagesPerMinute", default: b.telegramGroupMessagesPerMinute
        )
        b.wechatTokenLifetimeSeconds = reader.int(
            forKey: "sim.wechat.tokenLifetimeSeconds", default: b.wechatTokenLifetimeSeconds
        )
        b.wechatTokenOverlapSeconds = reader.int(
            forKey: "sim.wechat.tokenOverlapSeconds", default: b.wechatTokenOverlapSeconds
        )
        b.wechatTokenDailyQuota = reader.int(forKey: "sim.wechat.tokenDailyQuota", default: b.wechatTokenDailyQuota)
        b.wechatCustomDailyQuota = reader.int(
            forKey: "sim.wechat.customDailyQuota", default: b.wechatCustomDailyQuota
        )
        b.wechatTemplateDailyQuota = reader.int(
            forKey: "sim.wechat.templateDailyQuota", default: b.wechatTemplateDailyQuota
        )
        b.wechatRepliesPerMessage = reader.int(
            forKey: "sim.wechat.repliesPerMessage", default: b.wechatRepliesPerMessage
        )
        b.whatsappFailuresInResponse = reader.bool(
            forKey: "sim.whatsapp.failuresInResponse", default: b.whatsappFailuresInResponse
        )
        b.enforceWindows = reader.bool(forKey: "sim.enforceWindows", default: b.enforceWindows)
        b.blockedShare = reader.double(forKey: "sim.blockedShare", default: 0)
        b.unknownShare = reader.double(forKey: "sim.unknownShare", default: 0)
        b.timeoutSeconds = reader.double(forKey: "sim.faults.timeoutSeconds", default: b.timeoutSeconds)
        b.wechatClientMessageIDWindowSeconds = reader.double(
            forKey: "sim.wechat.clientMessageIdWindowSeconds", default: b.wechatClientMessageIDWindowSeconds
        )
        behaviour = b
    }

    static func list(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// `banditore_bulletin:2,other:1` → name → parameter count.
    static func parseTemplates(_ text: String) -> [String: Int] {
        var out: [String: Int] = [:]
        for item in list(text) {
            let parts = item.split(separator: ":", maxSplits: 1)
            out[String(parts[0])] = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        }
        return out
    }

    /// `telegram:123,whatsapp:393470000001` → channel → addresses.
    static func parseAddresses(_ text: String) -> [Channel: Set<String>] {
        var out: [Channel: Set<String>] = [:]
        for item in list(text) {
            let parts = item.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, let channel = Channel(rawValue: String(parts[0])) else { continue }
            out[channel, default: []].insert(String(parts[1]))
        }
        return out
    }
}
