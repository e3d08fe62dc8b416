import AsyncHTTPClient
import BanditoreCore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// The three providers' APIs, played on loopback: the same paths as the real services, their credentials, limits,
/// error shapes and faults, a record of every accepted message, and citizens who send signed webhooks.
///
/// Add its routes to a router with ``addRoutes(to:)`` and run it as a service: it sends WhatsApp statuses to
/// ingest while it runs and closes its HTTP client when it stops. Without a service group, call ``shutdown()``.
public final class ProviderSimulator: Service, Sendable {
    public let configuration: SimulatorConfiguration
    let logger: Logger
    let state: Mutex<SimState>
    let clock = ContinuousClock()
    let started: ContinuousClock.Instant
    /// A prefix that keeps provider message ids unique across restarts.
    let instance: String
    /// Sends WhatsApp statuses to ingest.
    public let statusWebhooks: StatusWebhookSender
    /// The client that plays citizens and sends statuses.
    let client: HTTPClient
    /// The service's own metrics (Prometheus text), served at `/metrics` before the simulator's.
    let runtimeMetrics: @Sendable () -> String

    public init(
        configuration: SimulatorConfiguration, logger: Logger, metrics: @escaping @Sendable () -> String = { "" }
    ) {
        self.configuration = configuration
        runtimeMetrics = metrics
        self.logger = logger
        started = clock.now
        let seed = configuration.seed ?? UInt64.random(in: 1...UInt64.max)
        instance = String(UInt64(Date().timeIntervalSince1970 * 1000), radix: 36)
        state = Mutex(SimState(configuration: configuration, seed: seed))
        var clientConfiguration = HTTPClient.Configuration()
        clientConfiguration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 256
        clientConfiguration.timeout = .init(connect: .seconds(5), read: .seconds(30))
        client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: clientConfiguration)
        statusWebhooks = StatusWebhookSender(configuration: configuration, client: client, logger: logger)
    }

    /// Sends statuses until graceful shutdown, then closes the HTTP client.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await self.statusWebhooks.run()
        }
        try await shutdown()
    }

    /// Closes the HTTP client (when the simulator is not run as a service).
    public func shutdown() async throws {
        try await client.shutdown()
    }

    /// Seconds since the simulator started (monotonic).
    func now() -> Double {
        started.duration(to: clock.now).inSeconds
    }

    // MARK: Shared steps of every send

    /// What the dice said about a send before it is looked at.
    enum Fault {
        case none
        case error
        case timeout
        /// Accepted, the answer held past the client's timeout.
        case late
    }

    /// Draws the fault of one call and how long to hold its answer: the latency, plus the timeout of a timeout
    /// fault.
    func draw(_ channel: Channel) -> (fault: Fault, delayMs: Double) {
        state.withLock { s in
            let b = s.behaviour[channel]
            var latency = b.latencyMs
            if b.latencyJitterMs > 0 { latency += Double.random(in: 0...b.latencyJitterMs, using: &s.rng) }
            if s.rng.chance(b.tailShare) { latency += b.tailMs }
            let roll = Double.random(in: 0..<1, using: &s.rng)
            let fault: Fault =
                roll < b.timeoutRate
                ? .timeout
                : roll < b.timeoutRate + b.errorRate
                    ? .error : roll < b.timeoutRate + b.errorRate + b.lateRate ? .late : .none
            switch fault {
            case .none: break
            case .late:
                s.recorder.count(channel) { $0.lateAnswers += 1 }
                latency += s.behaviour.timeoutSeconds * 1000
            case .error: s.recorder.count(channel) { $0.faults += 1 }
            case .timeout:
                s.recorder.count(channel) { $0.timeouts += 1 }
                latency += s.behaviour.timeoutSeconds * 1000
            }
            return (fault, latency)
        }
    }

    /// Prometheus text: the runtime's metrics, then the simulator's counters per channel.
    func metricsText() -> String {
        let stats = stats()
        var out = runtimeMetrics()
        func family(_ name: String, _ help: String, _ value: (ChannelStats) -> Int) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) counter\n"
            for (channel, s) in stats.channels.sorted(by: { $0.key < $1.key }) {
                out += "\(name){channel=\"\(channel)\"} \(value(s))\n"
            }
        }
        family("banditore_sim_accepted_total", "Messages the simulated providers accepted.") { $0.accepted }
        family("banditore_sim_duplicates_total", "Accepted messages that repeat content to a recipient.") {
            $0.duplicates
        }
        family("banditore_sim_throttled_total", "Sends refused for a rate limit.") { $0.throttled }
        family("banditore_sim_faults_total", "Injected transient errors.") { $0.faults }
        family("banditore_sim_timeouts_total", "Injected timeouts.") { $0.timeouts }
        family("banditore_sim_late_answers_total", "Sends accepted and answered after the timeout.") { $0.lateAnswers }
        family("banditore_sim_repeats_dropped_total", "Repeated sends dropped by their client_msg_id.") {
            $0.repeatsDropped
        }
        family("banditore_sim_webhooks_total", "Citizen webhooks sent to ingest.") { $0.webhooksSent }
        out += "# HELP banditore_sim_rejected_total Sends refused, by the provider's code.\n"
        out += "# TYPE banditore_sim_rejected_total counter\n"
        for (channel, s) in stats.channels.sorted(by: { $0.key < $1.key }) {
            for (code, count) in s.rejected.sorted(by: { $0.key < $1.key }) {
                out += "banditore_sim_rejected_total{channel=\"\(channel)\",code=\"\(code)\"} \(count)\n"
            }
        }
        return out
    }

    /// A 12-character request id, like the providers' trace ids.
    func traceID() -> String {
        state.withLock { s in String(s.rng.next() & 0xFFFF_FFFF_FFFF, radix: 36) }
    }
}

/// Everything that changes, behind one lock.
struct SimState: Sendable {
    var behaviour: SimulatorConfiguration.Behaviour
    var rng: SplitMix64
    var recorder: Recorder

    // Rate limits.
    var global: [Channel: TokenBucket] = [:]
    var telegramPaid: TokenBucket?
    var perRecipient = KeyedBuckets()
    /// WeChat template sends by `openid|client_msg_id`: when they were taken and their msgid.
    var wechatClientMessageIDs: [String: (at: Double, msgID: String)] = [:]

    // People.
    var blocked: [Channel: Set<String>]
    var unknown: [Channel: Set<String>]
    /// `channel|address` → monotonic seconds of the citizen's last message.
    var lastInbound: [String: Double] = [:]
    /// WeChat custom replies left in the current window, per openid.
    var repliesLeft: [String: Int] = [:]
    /// The WeChat window's length for an openid (48 h after a message, 60 s after a follow).
    var windowLength: [String: Double] = [:]

    // Credentials.
    var whatsappToken: String
    var wechat = WeChatTokens()

    // Ids.
    var messageCounter = 0
    var telegramUpdateID: Int64 = 900_000_000
    var telegramChannelIDs: [String: Int64] = [:]

    init(configuration: SimulatorConfiguration, seed: UInt64) {
        behaviour = configuration.behaviour
        rng = SplitMix64(seed: seed)
        recorder = Recorder(limit: configuration.recordLimit)
        blocked = configuration.blocked
        unknown = configuration.unknown
        whatsappToken = configuration.whatsappAccessToken
    }

    /// Takes a token from the channel's account-wide bucket; nil when allowed, else seconds to wait.
    mutating func takeGlobal(_ channel: Channel, now: Double) -> Double? {
        let rate = behaviour[channel].messagesPerSecond
        guard behaviour.rateLimits, rate > 0 else { return nil }
        let burst = max(1, rate)
        return global[channel, default: TokenBucket(burst: burst, now: now)].take(rate: rate, burst: burst, now: now)
    }

    mutating func takeRecipient(_ key: String, rate: Double, burst: Double, now: Double) -> Double? {
        guard behaviour.rateLimits, rate > 0 else { return nil }
        return perRecipient.take(key, rate: rate, burst: max(1, burst), now: now)
    }

    func isBlocked(_ channel: Channel, _ address: String) -> Bool {
        blocked[channel]?.contains(address) == true || Self.share(address, salt: 1) < behaviour.blockedShare
    }

    func isUnknown(_ channel: Channel, _ address: String) -> Bool {
        unknown[channel]?.contains(address) == true || Self.share(address, salt: 2) < behaviour.unknownShare
    }

    /// Whether a free-text window is open: the citizen wrote within `hours`.
    func windowOpen(_ channel: Channel, _ address: String, hours: Double, now: Double) -> Bool {
        guard behaviour.enforceWindows else { return true }
        guard let last = lastInbound["\(channel.rawValue)|\(address)"] else { return false }
        return now - last <= hours * 3600
    }

    mutating func nextCounter() -> Int {
        messageCounter += 1
        return messageCounter
    }

    /// A stable number in 0..<1 for an address (FNV-1a), so a share of addresses is always the same ones.
    static func share(_ address: String, salt: UInt64) -> Double {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325 ^ salt
        for byte in address.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        return Double(hash % 1_000_000) / 1_000_000
    }
}

/// WeChat access tokens: the current one, the one it replaced (still valid for the overlap), quotas.
struct WeChatTokens: Sendable {
    var current: (token: String, expiresAt: Double)?
    var previous: (token: String, validUntil: Double)?
    var tokenCalls = 0
    var customSends = 0
    var templateSends = 0
    var day = 0

    /// Resets the daily quotas when a day (of simulator time) has passed.
    mutating func roll(now: Double) {
        let today = Int(now / 86_400)
        if today != day {
            day = today
            tokenCalls = 0
            customSends = 0
            templateSends = 0
        }
    }

    enum Check {
        case valid
        case missing
        case expired
        case invalid
    }

    func check(_ token: String?, now: Double) -> Check {
        guard let token, !token.isEmpty else { return .missing }
        if let current, current.token == token { return now < current.expiresAt ? .valid : .expired }
        if let previous, previous.token == token, now < previous.validUntil { return .valid }
        return .invalid
    }
}
