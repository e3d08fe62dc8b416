import BanditoreCore
import BanditoreRuntime
import Configuration
import Logging
import ServiceLifecycle

/// A dispatcher executable: the runtime (broker, database, health and metrics) plus a ``Dispatcher`` for one
/// channel with its sender, configured from flags and environment variables.
///
/// Its settings, with their environment variables and defaults, are tabled in the README (which
/// `scripts/check-config` holds to the `reader` calls here).
public enum DispatchService {
    public static let defaultPorts: [Channel: Int] = [.whatsapp: 8083, .telegram: 8084, .wechat: 8085]

    public static func defaultRate(_ channel: Channel) -> Double {
        switch channel {
        case .whatsapp: 80
        case .telegram: 30
        case .wechat: 0
        }
    }

    /// Runs `banditore-dispatch-<channel>` until SIGTERM or SIGINT.
    public static func run(channel: Channel) async throws {
        try await ServiceRunner.run(
            ServiceDescription(
                name: "banditore-dispatch-\(channel.rawValue)", defaultPort: defaultPorts[channel]!,
                queues: BanditoreTopology.dispatchQueues(channel)
            )
        ) { context in
            try makeParts(channel: channel, context: context)
        }
    }

    /// The dispatcher and its HTTP client, wired from the context's reader.
    public static func makeParts(channel: Channel, context: ServiceContext) throws -> ServiceParts {
        guard let amqp = context.amqp, let database = context.database else {
            throw DispatchError(.configuration, detail: "a dispatcher needs the broker and the database")
        }
        let reader = context.reader
        // Telegram's paid broadcast (`allow_paid_broadcast`, paid per message): never, or for urgent bulletins.
        let paidBroadcast = reader.string(forKey: "dispatch.paidBroadcast", default: "never")
        guard paidBroadcast == "never" || paidBroadcast == "urgent" else {
            throw DispatchError(.configuration, detail: "DISPATCH_PAID_BROADCAST is \(paidBroadcast): never or urgent")
        }
        guard paidBroadcast == "never" || channel == .telegram else {
            throw DispatchError(.configuration, detail: "DISPATCH_PAID_BROADCAST=urgent is Telegram's alone")
        }
        let paidRate = reader.double(forKey: "dispatch.paidRatePerSecond", default: 1000)
        let maxInFlight = reader.int(
            forKey: "dispatch.maxInFlight",
            default: defaultMaxInFlight(fastestRate: paidBroadcast == "urgent" ? paidRate : nil)
        )
        let timeout = reader.double(forKey: "dispatch.requestTimeoutSeconds", default: 10)
        let api = try ProviderHTTP(
            baseURL: reader.string(forKey: ConfigKey("\(channel.rawValue).apiUrl"), default: "http://127.0.0.1:9090"),
            maxConnections: maxInFlight, timeout: .milliseconds(Int(timeout * 1000))
        )
        let sender: any ChannelSender
        switch channel {
        case .whatsapp:
            sender = WhatsAppSender(
                configuration: .init(
                    apiVersion: reader.string(forKey: "whatsapp.apiVersion", default: "v21.0"),
                    phoneNumberID: reader.string(forKey: "whatsapp.phoneNumberId", default: "1065403"),
                    accessToken: reader.string(
                        forKey: "whatsapp.accessToken", isSecret: true, default: "sim-whatsapp-token")
                ),
                http: api
            )
        case .telegram:
            sender = TelegramSender(
                botToken: reader.string(
                    forKey: "telegram.botToken", isSecret: true, default: "7770001:sim-telegram-token"),
                http: api
            )
        case .wechat:
            sender = WeChatSender(
                tokens: .wechat(
                    appID: reader.string(forKey: "wechat.appId", default: "wxsim0000000001"),
                    appSecret: reader.string(
                        forKey: "wechat.appSecret", isSecret: true, default: "sim-wechat-app-secret"),
                    http: api, database: database, logger: context.logger
                ),
                http: api
            )
        }
        let rateLimitKey = reader.string(forKey: "dispatch.rateLimitKey", default: channel.rawValue)
        let headroom = reader.double(forKey: "dispatch.rateHeadroom", default: 0.02)
        let limiter = SharedRateLimiter(
            configuration: .init(
                key: rateLimitKey,
                ratePerSecond: reader.double(forKey: "dispatch.ratePerSecond", default: defaultRate(channel)),
                headroom: headroom
            ),
            database: database, logger: context.logger
        )
        let paidLimiter = SharedRateLimiter(
            configuration: .init(
                key: "\(rateLimitKey).paid",
                ratePerSecond: paidRate,
                headroom: headroom
            ),
            database: database, logger: context.logger
        )
        let dispatcher = Dispatcher(
            configuration: .init(
                channel: channel, maxInFlight: maxInFlight,
                prefetch: reader.int(forKey: "dispatch.prefetch", default: 4),
                replyPrefetch: reader.int(forKey: "dispatch.replyPrefetch", default: 16),
                maxAttempts: reader.int(forKey: "dispatch.maxAttempts", default: 6),
                recipientInterval: reader.double(forKey: "dispatch.recipientIntervalSeconds").map {
                    .milliseconds(Int($0 * 1000))
                },
                recipientMargin: .milliseconds(
                    reader.int(forKey: "dispatch.recipientMarginMilliseconds", default: 250)),
                paidBroadcastForUrgent: paidBroadcast == "urgent",
                sharedPace: reader.bool(forKey: "dispatch.sharedPace", default: true),
                statusInterval: .milliseconds(reader.int(forKey: "dispatch.statusIntervalMilliseconds", default: 50)),
                maxUnrecorded: reader.int(forKey: "dispatch.maxUnrecorded", default: 1_000),
                retryBackoffScale: reader.double(forKey: "dispatch.retryBackoffScale", default: 1)
            ),
            sender: sender, amqp: amqp, database: database, rateLimiter: limiter,
            paidRateLimiter: paidBroadcast == "urgent" ? paidLimiter : nil, logger: context.logger
        )
        return ServiceParts(services: [HTTPPoolService(http: api), dispatcher])
    }
}

/// Sends in flight per replica unless configured: 64, or a quarter of a second's worth of the fastest rate (256 at
/// the paid broadcast's 1,000/s). A rate needs at least its rate times the provider's answer time in flight (Little's
/// law): 64 hold 1,000/s only while every answer comes within 64 ms, and a loaded machine or a distant provider
/// takes longer.
func defaultMaxInFlight(fastestRate: Double?) -> Int {
    max(64, Int(((fastestRate ?? 0) / 4).rounded(.up)))
}

/// Closes the provider's connections once the services after it (the dispatcher) have stopped.
struct HTTPPoolService: Service {
    let http: ProviderHTTP

    func run() async throws {
        try? await gracefulShutdown()
        http.shutdown()
    }
}
