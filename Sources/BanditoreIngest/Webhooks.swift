import BanditoreAMQP
import BanditoreChannels
import BanditoreCore
import BanditoreRuntime
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics

/// The channels' webhook endpoints.
///
/// Every request is verified first (WhatsApp HMAC of the raw body, Telegram secret header, WeChat sha1 query
/// signature), its body capped, then decoded; each event becomes a ``CitizenCommand`` published to
/// `banditore.commands` with publisher confirms, and the answer is 200 only after the broker confirmed. A bad
/// signature is 401 (403 for a verification handshake with the wrong token), a malformed body 400, an oversized one
/// 413, and nothing is published for any of them; with the broker away the answer is 503, so the provider retries.
public struct Webhooks: Sendable {
    public struct Secrets: Sendable {
        public var whatsappAppSecret: String
        public var whatsappVerifyToken: String
        public var telegramSecret: String
        public var wechatToken: String

        public init(whatsappAppSecret: String, whatsappVerifyToken: String, telegramSecret: String, wechatToken: String)
        {
            self.whatsappAppSecret = whatsappAppSecret
            self.whatsappVerifyToken = whatsappVerifyToken
            self.telegramSecret = telegramSecret
            self.wechatToken = wechatToken
        }
    }

    let secrets: Secrets
    let amqp: AMQPConnection
    let maxBodyBytes: Int
    let logger: Logger

    public init(secrets: Secrets, amqp: AMQPConnection, maxBodyBytes: Int, logger: Logger) {
        self.secrets = secrets
        self.amqp = amqp
        self.maxBodyBytes = maxBodyBytes
        self.logger = logger
    }

    public func add(to router: Router<BasicRequestContext>) {
        router.get("webhooks/whatsapp") { request, _ in whatsappVerification(request) }
        router.post("webhooks/whatsapp") { request, _ in await measured(.whatsapp) { await whatsapp(request) } }
        router.post("webhooks/telegram") { request, _ in await measured(.telegram) { await telegram(request) } }
        router.get("webhooks/wechat") { request, _ in wechatVerification(request) }
        router.post("webhooks/wechat") { request, _ in await measured(.wechat) { await wechat(request) } }
    }

    // MARK: WhatsApp

    func whatsappVerification(_ request: Request) -> Response {
        guard
            let challenge = WhatsApp.verificationChallenge(
                query: query(request), verifyToken: secrets.whatsappVerifyToken)
        else { return .problem(.forbidden, "verify_token_mismatch", "hub.mode or hub.verify_token is wrong") }
        return .text(challenge)
    }

    func whatsapp(_ request: Request) async -> Response {
        let body: [UInt8]
        switch await read(request) {
        case .success(let bytes): body = bytes
        case .failure(let refusal): return refusal.response
        }
        guard
            WhatsApp.verifySignature(
                header: request.headers[HTTPField.Name("X-Hub-Signature-256")!], body: body,
                appSecret: secrets.whatsappAppSecret
            )
        else {
            return .problem(.unauthorized, "bad_signature", "X-Hub-Signature-256 is missing or does not match the body")
        }
        let events: [WhatsApp.Event]
        do {
            events = try WhatsApp.decodeWebhook(body)
        } catch {
            return .problem(.badRequest, "malformed_body", "\(error)")
        }
        return await publish(WebhookNormaliser.whatsapp(events), answer: .text("ok"))
    }

    // MARK: Telegram

    func telegram(_ request: Request) async -> Response {
        // The secret is checked before the body is read: a request without it costs nothing more.
        guard
            Telegram.verifySecret(
                header: request.headers[HTTPField.Name("X-Telegram-Bot-Api-Secret-Token")!],
                secret: secrets.telegramSecret
            )
        else {
            return .problem(
                .unauthorized, "bad_secret", "X-Telegram-Bot-Api-Secret-Token is missing or wrong"
            )
        }
        let body: [UInt8]
        switch await read(request) {
        case .success(let bytes): body = bytes
        case .failure(let refusal): return refusal.response
        }
        let update: Telegram.Update
        do {
            update = try Telegram.decodeUpdate(body)
        } catch {
            return .problem(.badRequest, "malformed_body", "\(error)")
        }
        return await publish(WebhookNormaliser.telegram(update).map { [$0] } ?? [], answer: .text("ok"))
    }

    // MARK: WeChat

    func wechatVerification(_ request: Request) -> Response {
        guard let echo = WeChat.echo(query: query(request), token: secrets.wechatToken) else {
            return .problem(.unauthorized, "bad_signature", "signature, timestamp or nonce is missing or wrong")
        }
        return .text(echo)
    }

    func wechat(_ request: Request) async -> Response {
        guard WeChat.verifySignature(query: query(request), token: secrets.wechatToken) else {
            return .problem(.unauthorized, "bad_signature", "signature, timestamp or nonce is missing or wrong")
        }
        let body: [UInt8]
        switch await read(request) {
        case .success(let bytes): body = bytes
        case .failure(let refusal): return refusal.response
        }
        let inbound: WeChat.Inbound
        do {
            inbound = try WeChat.decodeInbound(body)
        } catch {
            return .problem(.badRequest, "malformed_body", "\(error)")
        }
        // `success` acknowledges without a passive reply; the registry replies through the custom-message API.
        return await publish([WebhookNormaliser.wechat(inbound)], answer: .text("success"))
    }

    // MARK: Shared

    struct Refusal: Error {
        let response: Response
    }

    /// The body, at most `maxBodyBytes` of it.
    func read(_ request: Request) async -> Result<[UInt8], Refusal> {
        await Self.read(request, maxBodyBytes: maxBodyBytes)
    }

    /// The body, at most `maxBodyBytes` of it: 413 when the declared or the actual length is over.
    static func read(_ request: Request, maxBodyBytes: Int) async -> Result<[UInt8], Refusal> {
        let tooLarge = Response.problem(
            .contentTooLarge, "body_too_large", "the body is larger than \(maxBodyBytes) bytes"
        )
        if let length = request.headers[.contentLength].flatMap(Int.init), length > maxBodyBytes {
            return .failure(Refusal(response: tooLarge))
        }
        do {
            var buffer = try await request.body.collect(upTo: maxBodyBytes)
            return .success(buffer.readBytes(length: buffer.readableBytes) ?? [])
        } catch let error as HTTPError where error.status == .contentTooLarge {
            return .failure(Refusal(response: tooLarge))
        } catch {
            return .failure(Refusal(response: .problem(.badRequest, "unreadable_body", "\(error)")))
        }
    }

    /// Publishes the commands (all confirmed) and answers `answer`, or 503 when the broker is away.
    func publish(_ commands: [CitizenCommand], answer: Response) async -> Response {
        guard !commands.isEmpty else { return answer }
        guard amqp.isConnected else { return brokerAway(AMQPError(.notConnected)) }
        do {
            if commands.count == 1, let command = commands.first {
                // The common case, without a child task.
                try await amqp.publishConfirmed(
                    Self.message(command), exchange: BanditoreTopology.commandsExchange, routingKey: command.routingKey
                )
            } else {
                try await publishAll(commands)
            }
            IngestMetrics.commands.increment(by: commands.count)
            return answer
        } catch {
            return brokerAway(error)
        }
    }

    /// The commands published at once, each confirmed.
    private func publishAll(_ commands: [CitizenCommand]) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for command in commands {
                let message = try Self.message(command)
                let amqp = self.amqp
                group.addTask {
                    try await amqp.publishConfirmed(
                        message, exchange: BanditoreTopology.commandsExchange, routingKey: command.routingKey
                    )
                }
            }
            try await group.waitForAll()
        }
    }

    private func brokerAway(_ error: any Error) -> Response {
        logger.warning("webhook refused with 503: broker unavailable", metadata: ["error": "\(error)"])
        return .unavailable("broker_unavailable", "the message broker is unavailable; retry later")
    }

    static func message(_ command: CitizenCommand) throws -> AMQPMessage {
        try .json(
            encoding: command, type: CitizenCommand.messageType, messageID: command.id,
            correlationID: command.correlationID,
            headers: ["citizen": .string(CitizenKey.of(channel: command.channel, address: command.address))],
            timestamp: command.receivedAt
        )
    }

    func query(_ request: Request) -> [String: String] {
        var out: [String: String] = [:]
        for (key, value) in request.uri.queryParameters where out[String(key)] == nil {
            out[String(key)] = String(value)
        }
        return out
    }

    func measured(_ channel: Channel, _ body: () async -> Response) async -> Response {
        let start = ContinuousClock.now
        let response = await body()
        let elapsed = ContinuousClock.now - start
        IngestMetrics.webhook(channel: channel, status: response.status.code, elapsed: elapsed)
        return response
    }
}

enum IngestMetrics {
    static let commands = Counter(label: "banditore_ingest_commands_published_total")

    static func webhook(channel: Channel, status: Int, elapsed: Duration) {
        Counter(
            label: "banditore_ingest_webhooks_total",
            dimensions: [("channel", channel.rawValue), ("status", String(status))]
        ).increment()
        Timer(label: "banditore_ingest_webhook_duration_seconds", dimensions: [("channel", channel.rawValue)])
            .recordNanoseconds(elapsed.wholeNanoseconds)
    }
}

extension Response {
    /// A JSON error: `{"error": code, "message": …}`.
    static func problem(_ status: HTTPResponse.Status, _ code: String, _ message: String) -> Response {
        let body = "{\"error\":\(JSONText.quote(code)),\"message\":\(JSONText.quote(message))}\n"
        return Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: body))
        )
    }

    /// 503 with `Retry-After`: the broker or the database is away; the client (a provider, the admin service)
    /// retries.
    static func unavailable(_ code: String, _ message: String) -> Response {
        var response = problem(.serviceUnavailable, code, message)
        response.headers[.retryAfter] = "5"
        return response
    }

    /// The admin API's answer while the database is away.
    static var databaseAway: Response {
        unavailable("database_unavailable", "the database is unavailable; retry later")
    }

    static func text(_ text: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: text))
        )
    }

    /// A problem about one field of the request: `{"error":"invalid_field","field":…,"message":…}`.
    static func invalidField(_ field: String, _ message: String, status: HTTPResponse.Status = .unprocessableContent)
        -> Response
    {
        let body =
            "{\"error\":\"invalid_field\",\"field\":\(JSONText.quote(field)),\"message\":\(JSONText.quote(message))}\n"
        return Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: body))
        )
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        encoder.dateEncodingStrategy = .iso8601
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data))
        )
    }
}
