import BanditoreChannels
import BanditoreCore
import BanditorePostgres
import BanditoreRuntime
import BanditoreStore
import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// The admin API's bulletins: `POST /v1/bulletins`, `GET /v1/bulletins/{id}`, `POST /v1/bulletins/{id}/cancel`,
/// `GET /v1/topics`.
///
/// A bulletin is written with its `bulletin.submitted` message in the outbox in one transaction, and published
/// after the commit (the relay's sweep publishes it if the broker was away): the row and the message cannot
/// diverge. `Idempotency-Key` makes a retried POST answer the first bulletin; the same key with another body is
/// refused.
struct BulletinRoutes: Sendable {
    let tokens: AdminTokens
    let database: DatabasePool
    let relay: OutboxRelay
    let templates: BulletinTemplates
    let maxBodyBytes: Int
    let logger: Logger

    func add(to router: Router<BasicRequestContext>) {
        router.post("v1/bulletins") { request, _ in await create(request) }
        router.get("v1/bulletins/:id") { request, context in
            await authorized(request) { await show(context.parameters.get("id") ?? "") }
        }
        router.post("v1/bulletins/:id/cancel") { request, context in
            await authorized(request) { await cancel(context.parameters.get("id") ?? "") }
        }
        router.get("v1/topics") { request, _ in
            await authorized(request) { await topics() }
        }
        router.add(middleware: MethodNotAllowed())
        // The API's own description, public like any documentation.
        let document = Self.openAPIDocument
        router.get("v1/openapi.yaml") { _, _ -> Response in
            guard let document else { return .problem(.notFound, "not_found", "the OpenAPI document is not installed") }
            return Response(
                status: .ok, headers: [.contentType: "application/yaml; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: document))
            )
        }
    }

    /// `openapi.yaml`, kept beside this file and shipped as the module's resource.
    static let openAPIDocument: String? = Bundle.module.url(forResource: "openapi", withExtension: "yaml")
        .flatMap { try? String(contentsOf: $0, encoding: .utf8) }

    private func authorized(_ request: Request, _ body: () async -> Response) async -> Response {
        guard tokens.authorizes(request.headers[.authorization]) else { return AdminRoutes.unauthorized }
        return await body()
    }

    // MARK: Create

    private func create(_ request: Request) async -> Response {
        guard tokens.authorizes(request.headers[.authorization]) else { return AdminRoutes.unauthorized }
        let bytes: [UInt8]
        switch await Webhooks.read(request, maxBodyBytes: maxBodyBytes) {
        case .success(let body): bytes = body
        case .failure(let refusal): return refusal.response
        }
        let draft: BulletinDraft
        do {
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            draft = try decoder.decode(BulletinDraft.self, from: Data(bytes))
        } catch let error as DecodingError {
            let (field, message) = Self.describe(error)
            return .invalidField(field, message, status: .badRequest)
        } catch {
            return .problem(.badRequest, "malformed_body", "the body is not JSON: \(error)")
        }
        let key = request.headers[HTTPField.Name("Idempotency-Key")!]
        if let key, key.isEmpty || key.count > 200 {
            return .invalidField("Idempotency-Key", "between 1 and 200 characters", status: .badRequest)
        }
        do {
            let known = Set(try await database.withConnection { try await Topics.load(on: $0) }.map(\.slug))
            let content = try draft.validated(knownTopics: known)
            try BulletinRendering.check(content, templates: templates)
            let id = UUID()
            let correlation = request.headers[HTTPField.Name("X-Correlation-ID")!] ?? id.uuidString.lowercased()
            let hash = Self.fingerprint(bytes)
            let (created, message) = try await database.withTransaction { connection in
                let created = try await Bulletins.create(
                    id: id, content: content, correlationID: correlation, idempotencyKey: key, requestHash: hash,
                    on: connection
                )
                guard case .created = created else { return (created, nil as OutboxMessage?) }
                let message = try await Outbox.add(
                    encoding: BulletinSubmitted(bulletinID: id, correlationID: correlation),
                    type: BulletinSubmitted.messageType, messageID: "bulletin-\(id.uuidString.lowercased())",
                    exchange: BanditoreTopology.bulletinsExchange, routingKey: BulletinSubmitted.routingKey,
                    on: connection
                )
                return (created, message)
            }
            switch created {
            case .created(let id):
                if let message {
                    do {
                        try await relay.publishCommitted(message)
                    } catch {
                        // Committed: the relay's sweep publishes it once the broker is back.
                        logger.warning(
                            "bulletin accepted; its message waits in the outbox",
                            metadata: ["bulletin.id": "\(id)", "error": "\(error)"]
                        )
                    }
                }
                logger.info(
                    "bulletin accepted", metadata: ["bulletin.id": "\(id)", "correlation.id": "\(correlation)"])
                return accepted(id, replayed: false)
            case .replayed(let id):
                return accepted(id, replayed: true)
            case .conflict(let id):
                return .problem(
                    .unprocessableContent, "idempotency_key_reused",
                    "Idempotency-Key \(key ?? "") was used for another request (bulletin \(id.uuidString.lowercased()))"
                )
            }
        } catch let invalid as BulletinInvalid {
            return .invalidField(invalid.field, invalid.message)
        } catch {
            logger.warning("bulletin not accepted: database error", metadata: ["error": "\(String(reflecting: error))"])
            return .databaseAway
        }
    }

    private func accepted(_ id: UUID, replayed: Bool) -> Response {
        let path = "/v1/bulletins/\(id.uuidString.lowercased())"
        var response = Response.json(Accepted(id: id.uuidString.lowercased(), status: path), status: .accepted)
        response.headers[.location] = path
        if replayed { response.headers[HTTPField.Name("Idempotent-Replayed")!] = "true" }
        return response
    }

    struct Accepted: Codable {
        var id: String
        var status: String
    }

    /// Which field a decoding error is about, in the API's words.
    static func describe(_ error: DecodingError) -> (field: String, message: String) {
        func path(_ codingPath: [any CodingKey], _ last: (any CodingKey)? = nil) -> String {
            var parts: [String] = []
            for key in codingPath + (last.map { [$0] } ?? []) {
                if let index = key.intValue {
                    parts[parts.count - 1] += "[\(index)]"
                } else {
                    parts.append(key.stringValue)
                }
            }
            return parts.isEmpty ? "body" : parts.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context): return (path(context.codingPath, key), "is required")
        case .typeMismatch(let type, let context): return (path(context.codingPath), "must be \(Self.name(type))")
        case .valueNotFound(let type, let context):
            return (path(context.codingPath), "must be \(Self.name(type)), not null")
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty
                ? ("body", "is not valid JSON") : (path(context.codingPath), context.debugDescription)
        @unknown default: return ("body", "\(error)")
        }
    }

    private static func name(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is [String].Type, is [Any].Type: "an array"
        case is [String: String].Type, is [String: Any].Type: "an object"
        case is Date.Type: "an ISO 8601 date-time"
        default: "\(type)"
        }
    }

    /// FNV-1a of the request body: the same key with a different body is another request.
    static func fingerprint(_ bytes: [UInt8]) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return String(hash, radix: 16)
    }

    // MARK: Read, cancel, topics

    // The names are the wire format's.
    // swift-format-ignore: AlwaysUseLowerCamelCase
    struct BulletinView: Codable {
        var id: String
        var title: String
        var body: [String: String]
        var state: String
        var urgency: String
        var topics: [String]
        var channels: [String]
        var send_at: Date?
        var scheduled_for: Date?
        var created_at: Date
        var progress: [String: ChannelProgress]
        var channel_posts: [ChannelPostStatus]
    }

    private func view(_ id: UUID, on connection: DatabaseConnection) async throws -> BulletinView? {
        guard let bulletin = try await Bulletins.load(id, on: connection) else { return nil }
        let content = bulletin.content
        return BulletinView(
            id: id.uuidString.lowercased(), title: content.title,
            body: Dictionary(uniqueKeysWithValues: content.body.map { ($0.key.rawValue, $0.value) }),
            state: bulletin.state.rawValue, urgency: content.urgency.rawValue, topics: content.topics,
            channels: content.channels.map(\.rawValue), send_at: content.sendAt, scheduled_for: bulletin.scheduledFor,
            created_at: bulletin.createdAt,
            progress: try await Bulletins.progress(id, channels: content.channels, on: connection),
            channel_posts: try await Bulletins.channelPosts(id, on: connection)
        )
    }

    private func show(_ text: String) async -> Response {
        guard let id = UUID(uuidString: text) else {
            return .invalidField("id", "not a bulletin id", status: .badRequest)
        }
        do {
            guard let view = try await database.withConnection({ try await view(id, on: $0) }) else {
                return .problem(.notFound, "not_found", "no bulletin \(text)")
            }
            return .json(view)
        } catch {
            return .databaseAway
        }
    }

    /// Cancels, then answers once the dispatchers have seen it: they look a bulletin's state up again at most
    /// every 250 ms before each send, so after the answer nothing more of it is sent.
    private func cancel(_ text: String) async -> Response {
        guard let id = UUID(uuidString: text) else {
            return .invalidField("id", "not a bulletin id", status: .badRequest)
        }
        do {
            guard let previous = try await database.withTransaction({ try await Bulletins.cancel(id, on: $0) }) else {
                return .problem(.notFound, "not_found", "no bulletin \(text)")
            }
            if previous != .cancelled {
                logger.info("bulletin cancelled", metadata: ["bulletin.id": "\(id)", "was": "\(previous)"])
                try? await Task.sleep(for: .milliseconds(600))
            }
            guard let view = try await database.withConnection({ try await view(id, on: $0) }) else {
                return .problem(.notFound, "not_found", "no bulletin \(text)")
            }
            return .json(view)
        } catch {
            return .databaseAway
        }
    }

    struct TopicView: Codable {
        var slug: String
        var names: [String: String]
    }

    private func topics() async -> Response {
        do {
            let topics = try await database.withConnection { try await Topics.load(on: $0) }
            let out = topics.map { topic in
                TopicView(
                    slug: topic.slug,
                    names: Dictionary(uniqueKeysWithValues: topic.names.map { ($0.key.rawValue, $0.value) })
                )
            }
            return .json(["topics": out])
        } catch {
            return .databaseAway
        }
    }
}

/// The admin API's paths answer a method they do not take with 405 and `Allow` (not 404): a client that used the
/// wrong method learns which ones the path takes.
struct MethodNotAllowed: RouterMiddleware {
    typealias Context = BasicRequestContext

    static func allowed(_ path: String) -> [String]? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        guard parts.first == "v1" else { return nil }
        switch (parts.count, parts.count > 1 ? parts[1] : "") {
        case (2, "bulletins"): return ["POST"]
        case (3, "bulletins"): return ["GET", "HEAD"]
        case (4, "bulletins") where parts[3] == "cancel": return ["POST"]
        case (2, "topics"), (2, "stats"), (2, "openapi.yaml"): return ["GET", "HEAD"]
        default: return nil
        }
    }

    @concurrent func handle(
        _ request: Request, context: Context, next: @concurrent (Request, Context) async throws -> Response
    ) async throws -> Response {
        if let allowed = Self.allowed(request.uri.path), !allowed.contains(request.method.rawValue) {
            var response = Response.problem(
                .methodNotAllowed, "method_not_allowed", "\(request.method.rawValue) is not allowed here"
            )
            response.headers[.allow] = allowed.joined(separator: ", ")
            return response
        }
        return try await next(request, context)
    }
}
