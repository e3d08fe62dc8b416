import BanditoreChannels
import BanditoreCore
import Foundation
import NIOHTTP1

/// One HTTP request, as the server read it.
public struct SimRequest: Sendable {
    public var method: HTTPMethod
    public var path: Substring
    public var query: Substring
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public init(method: HTTPMethod, uri: String, headers: HTTPHeaders = [:], body: [UInt8] = []) {
        self.method = method
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = parts[0]
        query = parts.count > 1 ? parts[1] : ""
        self.headers = headers
        self.body = body
    }

    var queryItems: [String: String] { parseForm(query) }
}

/// An answer now (after its delay), or one that needs waiting for (playing citizens).
public enum SimReply: Sendable {
    case now(SimResponse)
    case later(@Sendable () async -> SimResponse)
}

extension ProviderSimulator {
    /// The largest request body the simulated providers read.
    public static let maxBody = 1 << 20

    /// Routes a request: the providers' paths, `/sim/…` to inspect and steer the simulator, and the health and
    /// metrics endpoints every Banditore service has.
    public func handle(_ request: SimRequest) -> SimReply {
        let parts = request.path.split(separator: "/", omittingEmptySubsequences: true)
        let method = request.method
        // Telegram Bot API: /bot<token>/<method>, GET or POST, JSON, form or query.
        if parts.count == 2, parts[0].hasPrefix("bot") {
            return .now(
                telegram(
                    token: String(parts[0].dropFirst(3)), method: String(parts[1]),
                    contentType: request.headers.first(name: "content-type"), query: request.query, body: request.body
                ))
        }
        // WhatsApp Cloud API: POST /{version}/{phone-number-id}/messages.
        if parts.count == 3, parts[2] == "messages", parts[0].hasPrefix("v") {
            guard method == .POST else { return .now(methodNotAllowed) }
            return .now(
                whatsappSend(
                    version: String(parts[0]), phoneNumberID: String(parts[1]),
                    authorization: request.headers.first(name: "authorization"), body: request.body
                ))
        }
        switch (method, request.path) {
        // WeChat Official Account API.
        case (.GET, "/cgi-bin/token"):
            return .now(wechatToken(query: request.queryItems))
        case (.POST, "/cgi-bin/stable_token"):
            return .now(wechatStableToken(body: request.body))
        case (.POST, "/cgi-bin/message/custom/send"):
            return .now(wechatCustomSend(query: request.queryItems, body: request.body))
        case (.POST, "/cgi-bin/message/template/send"):
            return .now(wechatTemplateSend(query: request.queryItems, body: request.body))
        // Health.
        case (.GET, "/healthz"):
            return .now(.text(.ok, "ok\n"))
        case (.GET, "/readyz"):
            return .now(.text(.ok, "ready\n"))
        case (.GET, "/metrics"):
            return .now(
                SimResponse(
                    status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metricsText()
                ))
        default:
            if parts.first == "sim" { return inspect(request, path: parts.dropFirst().joined(separator: "/")) }
            return .now(.json(.notFound, "{\"error\":\"no such endpoint: \(method) \(request.path)\"}"))
        }
    }

    private var methodNotAllowed: SimResponse {
        .json(.methodNotAllowed, "{\"error\":\"method not allowed\"}")
    }

    // MARK: Inspection and control

    private func inspect(_ request: SimRequest, path: String) -> SimReply {
        let query = request.queryItems
        switch (request.method, path) {
        case (.GET, "messages"):
            let channel = query["channel"].flatMap(Channel.init(rawValue:))
            let after = query["after"].flatMap(Int.init) ?? 0
            let limit = min(query["limit"].flatMap(Int.init) ?? 1000, 100_000)
            let messages = state.withLock {
                $0.recorder.find(channel: channel, recipient: query["recipient"], after: after, limit: limit)
            }
            return .now(.json(encoding: MessagesPage(messages: messages, count: messages.count)))
        case (.GET, "stats"):
            return .now(.json(encoding: stats()))
        case (.GET, "duplicates"):
            let channel = query["channel"].flatMap(Channel.init(rawValue:))
            let duplicates = state.withLock { $0.recorder.duplicates(channel: channel) }
            return .now(.json(encoding: ["duplicates": duplicates]))
        case (.POST, "reset"):
            reset()
            return .now(.json(.ok, "{\"reset\":true}"))
        case (.GET, "settings"):
            return .now(.json(encoding: state.withLock { $0.behaviour }))
        case (.PUT, "settings"):
            do {
                return .now(.json(encoding: try updateBehaviour(patch: request.body)))
            } catch {
                return .now(.json(.badRequest, "{\"error\":\(JSONText.quote("invalid settings: \(error)"))}"))
            }
        case (.POST, "people"):
            guard let change = try? JSONDecoder().decode(PeopleChange.self, from: Data(request.body)) else {
                return .now(
                    .json(
                        .badRequest,
                        "{\"error\":\"expected {channel, addresses, state: blocked|unknown|reachable, inbound?: bool}\"}"
                    ))
            }
            apply(change)
            return .now(.json(.ok, "{\"updated\":\(change.addresses.count)}"))
        case (.POST, "whatsapp/token"):
            guard let token = try? JSONDecoder().decode([String: String].self, from: Data(request.body))["accessToken"],
                !token.isEmpty
            else {
                return .now(.json(.badRequest, "{\"error\":\"expected {\\\"accessToken\\\": \\\"…\\\"}\"}"))
            }
            state.withLock { $0.whatsappToken = token }
            return .now(.json(.ok, "{\"rotated\":true}"))
        case (.POST, "wechat/expire"):
            expireWeChatTokens()
            return .now(.json(.ok, "{\"expired\":true}"))
        case (.POST, "citizens"):
            let play: PlayRequest
            do {
                play = try JSONDecoder().decode(PlayRequest.self, from: Data(request.body))
            } catch {
                return .now(.json(.badRequest, "{\"error\":\(JSONText.quote("invalid request: \(error)"))}"))
            }
            return .later { .json(encoding: await self.play(play)) }
        default:
            return .now(.json(.notFound, "{\"error\":\"no such endpoint: \(request.method) /sim/\(path)\"}"))
        }
    }

    struct MessagesPage: Codable {
        var messages: [RecordedMessage]
        var count: Int
    }

    /// `POST /sim/people`: mark addresses.
    public struct PeopleChange: Sendable, Codable {
        public enum State: String, Sendable, Codable {
            case blocked
            case unknown
            case reachable
        }
        public var channel: Channel
        public var addresses: [String]
        public var state: State
        /// Also open the free-text window, as if each had just written.
        public var inbound: Bool?

        public init(channel: Channel, addresses: [String], state: State, inbound: Bool? = nil) {
            self.channel = channel
            self.addresses = addresses
            self.state = state
            self.inbound = inbound
        }
    }

    public func apply(_ change: PeopleChange) {
        let now = now()
        state.withLock { s in
            for address in change.addresses {
                switch change.state {
                case .blocked: s.blocked[change.channel, default: []].insert(address)
                case .unknown: s.unknown[change.channel, default: []].insert(address)
                case .reachable:
                    s.blocked[change.channel]?.remove(address)
                    s.unknown[change.channel]?.remove(address)
                }
                if change.inbound == true {
                    let key = "\(change.channel.rawValue)|\(address)"
                    s.lastInbound[key] = now
                    s.windowLength[key] = 48 * 3600
                    s.repliesLeft[key] = s.behaviour.wechatRepliesPerMessage
                }
            }
        }
    }

    /// Counters per channel and of the status webhooks.
    public struct Stats: Sendable, Codable, Hashable {
        public var channels: [String: ChannelStats]
        public var recorded: Int
        public var statusWebhooks: StatusWebhookSender.Counts
        /// WeChat access-token calls today (`/cgi-bin/token` and `stable_token`), against the daily quota.
        public var wechatTokenCalls: Int
    }

    public func stats() -> Stats {
        let (channels, recorded, tokenCalls) = state.withLock { s in
            (
                Dictionary(
                    uniqueKeysWithValues: Channel.allCases.map {
                        ($0.rawValue, s.recorder.stats[$0] ?? ChannelStats())
                    }),
                s.recorder.recorded,
                s.wechat.tokenCalls
            )
        }
        return Stats(
            channels: channels, recorded: recorded, statusWebhooks: statusWebhooks.currentCounts,
            wechatTokenCalls: tokenCalls
        )
    }

    /// Forgets the messages, counters and rate-limit buckets; keeps people, windows and tokens.
    public func reset() {
        state.withLock { s in
            s.recorder = Recorder(limit: configuration.recordLimit)
            s.global = [:]
            s.telegramPaid = nil
            s.perRecipient.removeAll()
        }
    }

    /// Merges a partial JSON object into the behaviour (`{"rateLimits": false, "telegram": {"errorRate": 0.2}}`).
    public func updateBehaviour(patch: [UInt8]) throws -> SimulatorConfiguration.Behaviour {
        guard let changes = try JSONSerialization.jsonObject(with: Data(patch)) as? [String: Any] else {
            throw SettingsError(message: "not a JSON object")
        }
        return try state.withLock { s in
            let current = try JSONSerialization.jsonObject(with: JSONEncoder().encode(s.behaviour)) as? [String: Any]
            let merged = try Self.merge(current ?? [:], changes, path: "")
            s.behaviour = try JSONDecoder().decode(
                SimulatorConfiguration.Behaviour.self, from: JSONSerialization.data(withJSONObject: merged)
            )
            s.global = [:]
            s.telegramPaid = nil
            s.perRecipient.removeAll()
            return s.behaviour
        }
    }

    struct SettingsError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    private static func merge(_ base: [String: Any], _ patch: [String: Any], path: String) throws -> [String: Any] {
        var out = base
        for (key, value) in patch {
            guard let existing = base[key] else { throw SettingsError(message: "unknown setting \(path)\(key)") }
            if let nested = value as? [String: Any], let existing = existing as? [String: Any] {
                out[key] = try merge(existing, nested, path: "\(path)\(key).")
            } else {
                out[key] = value
            }
        }
        return out
    }
}
