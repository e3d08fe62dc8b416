import BanditoreChannels
import BanditorePostgres
import BanditoreRuntime
import BanditoreStore
import Configuration
import Hummingbird

/// The `banditore-ingest` executable: the runtime (broker, database, health and metrics) plus the channels'
/// webhooks and the admin API.
///
/// Its settings, with their environment variables and defaults, are tabled in the README (which
/// `scripts/check-config` holds to the `reader` calls here).
public enum IngestService {
    public static let defaultPort = 8080

    public static func run() async throws {
        try await ServiceRunner.run(ServiceDescription(name: "banditore-ingest", defaultPort: defaultPort)) { context in
            try makeParts(context: context)
        }
    }

    public static func makeParts(context: ServiceContext) throws -> ServiceParts {
        guard let amqp = context.amqp, let database = context.database else {
            throw ServiceSetupError("ingest needs the broker and the database")
        }
        let reader = context.reader
        let webhooks = Webhooks(
            secrets: .init(
                whatsappAppSecret: reader.string(
                    forKey: "whatsapp.appSecret", isSecret: true, default: "sim-whatsapp-app-secret"
                ),
                whatsappVerifyToken: reader.string(
                    forKey: "whatsapp.verifyToken", isSecret: true, default: "sim-whatsapp-verify-token"
                ),
                telegramSecret: reader.string(
                    forKey: "telegram.webhookSecret", isSecret: true, default: "sim-telegram-secret"),
                wechatToken: reader.string(forKey: "wechat.token", isSecret: true, default: "sim-wechat-token")
            ),
            amqp: amqp, maxBodyBytes: reader.int(forKey: "ingest.maxBodyBytes", default: 256 * 1024),
            logger: context.logger
        )
        let tokens = AdminTokens(
            reader.string(forKey: "admin.tokens", isSecret: true, default: "")
                .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        )
        if tokens.isEmpty { context.logger.warning("ADMIN_TOKENS is empty: the admin API refuses every request") }
        let relay = OutboxRelay(
            amqp: amqp, database: database, logger: context.logger,
            sweepInterval: .milliseconds(Int(reader.double(forKey: "outbox.sweepSeconds", default: 2) * 1000)),
            retention: .seconds(reader.double(forKey: "outbox.retentionHours", default: 168) * 3600)
        )
        let bulletins = BulletinRoutes(
            tokens: tokens, database: database, relay: relay,
            templates: BulletinTemplates(reader: reader),
            maxBodyBytes: reader.int(forKey: "ingest.maxBodyBytes", default: 256 * 1024), logger: context.logger
        )
        return ServiceParts(services: [relay]) { router in
            webhooks.add(to: router)
            AdminRoutes(tokens: tokens, database: database).add(to: router)
            bulletins.add(to: router)
        }
    }
}

/// The admin API's bearer tokens, compared in constant time.
public struct AdminTokens: Sendable {
    private let tokens: [[UInt8]]

    public init(_ tokens: [String]) {
        self.tokens = tokens.map { Array($0.utf8) }
    }

    public var isEmpty: Bool { tokens.isEmpty }

    /// Whether `Authorization: Bearer <token>` names one of the tokens (every token is compared, whatever matched).
    public func authorizes(_ header: String?) -> Bool {
        guard let header, header.count > 7, header.prefix(7).lowercased() == "bearer " else { return false }
        let given = Array(header.dropFirst(7).utf8)
        var matched = false
        for token in tokens where constantTimeEquals(token, given) { matched = true }
        return matched
    }
}

/// The admin API's `/v1/stats` (the bulletins are in ``BulletinRoutes``).
struct AdminRoutes: Sendable {
    let tokens: AdminTokens
    let database: DatabasePool

    func add(to router: Router<BasicRequestContext>) {
        router.get("v1/stats") { request, _ -> Response in
            guard tokens.authorizes(request.headers[.authorization]) else { return Self.unauthorized }
            do {
                return .json(try await SubscriberStats.load(database))
            } catch {
                return .databaseAway
            }
        }
    }

    static var unauthorized: Response {
        var response = Response.problem(
            .unauthorized, "unauthorized", "Authorization: Bearer <token> is missing or not one of ADMIN_TOKENS"
        )
        response.headers[.wwwAuthenticate] = "Bearer"
        return response
    }
}
