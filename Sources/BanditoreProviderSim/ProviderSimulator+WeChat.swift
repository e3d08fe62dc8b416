import BanditoreChannels
import BanditoreCore
import Foundation
import NIOHTTP1

/// `/cgi-bin/token`, `/cgi-bin/stable_token`, `/cgi-bin/message/custom/send` and `/cgi-bin/message/template/send`,
/// as the WeChat Official Account API: HTTP 200 always, `errcode` tells.
extension ProviderSimulator {
    // MARK: Tokens

    func wechatToken(query: [String: String]) -> SimResponse {
        guard query["grant_type"] == "client_credential" else { return wechatError(40002, "invalid grant_type") }
        return issueToken(appID: query["appid"], secret: query["secret"], stable: false, force: false)
    }

    // The names are the wire format's.
    // swift-format-ignore: AlwaysUseLowerCamelCase
    struct StableTokenBody: Decodable {
        var grant_type: String?
        var appid: String?
        var secret: String?
        var force_refresh: Bool?
    }

    func wechatStableToken(body: [UInt8]) -> SimResponse {
        guard let request = try? JSONDecoder().decode(StableTokenBody.self, from: Data(body)) else {
            return wechatError(47001, "data format error")
        }
        guard request.grant_type == "client_credential" else { return wechatError(40002, "invalid grant_type") }
        return issueToken(
            appID: request.appid, secret: request.secret, stable: true, force: request.force_refresh ?? false)
    }

    private func issueToken(appID: String?, secret: String?, stable: Bool, force: Bool) -> SimResponse {
        guard appID == configuration.wechatAppID else { return wechatError(40013, "invalid appid") }
        guard let secret, constantTimeEquals(secret.utf8, configuration.wechatAppSecret.utf8) else {
            return wechatError(40125, "invalid appsecret")
        }
        let now = now()
        let issued: (String, Int)? = state.withLock { s in
            s.wechat.roll(now: now)
            let lifetime = Double(s.behaviour.wechatTokenLifetimeSeconds)
            // The stable token stays the same until 5 minutes before it expires, unless forced.
            if stable, !force, let current = s.wechat.current, current.expiresAt - now > min(300, lifetime / 2) {
                return (current.token, Int(current.expiresAt - now))
            }
            guard s.wechat.tokenCalls < s.behaviour.wechatTokenDailyQuota else { return nil }
            s.wechat.tokenCalls += 1
            if let current = s.wechat.current {
                s.wechat.previous = (
                    current.token, min(current.expiresAt, now + Double(s.behaviour.wechatTokenOverlapSeconds))
                )
            }
            let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
            var token = "86_"
            for _ in 0..<512 { token.append(alphabet[Int(s.rng.next() % UInt64(alphabet.count))]) }
            s.wechat.current = (token, now + lifetime)
            return (token, Int(lifetime))
        }
        guard let (token, expiresIn) = issued else {
            return wechatError(45009, "reach max api daily quota limit")
        }
        return .json(.ok, "{\"access_token\":\(JSONText.quote(token)),\"expires_in\":\(expiresIn)}")
    }

    /// Ends every token's life now (`POST /sim/wechat/expire`), to test refreshing.
    public func expireWeChatTokens() {
        let now = now()
        state.withLock { s in
            if let current = s.wechat.current { s.wechat.current = (current.token, now) }
            s.wechat.previous = nil
        }
    }

    // MARK: Sends

    func wechatCustomSend(query: [String: String], body: [UInt8]) -> SimResponse {
        if let refused = checkToken(query["access_token"]) { return refused }
        guard let send = JSONValue.parse(body), send.isObject else {
            return reject(.wechat, "47001", wechatError(47001, "data format error"))
        }
        guard let openID = send["touser"]?.string, !openID.isEmpty else {
            return reject(.wechat, "40003", wechatError(40003, "invalid openid"))
        }
        guard send["msgtype"]?.string == "text" else {
            return reject(.wechat, "40008", wechatError(40008, "invalid message type"))
        }
        guard let content = send["text"]?["content"]?.string, !content.isEmpty else {
            return reject(.wechat, "47001", wechatError(47001, "data format error"))
        }
        guard content.utf8.count <= WeChat.maxCustomTextBytes else {
            return reject(.wechat, "45002", wechatError(45002, "content size out of limit"))
        }
        return wechatSend(openID: openID, template: nil, text: content, parameters: nil)
    }

    func wechatTemplateSend(query: [String: String], body: [UInt8]) -> SimResponse {
        if let refused = checkToken(query["access_token"]) { return refused }
        guard let send = JSONValue.parse(body), send.isObject else {
            return reject(.wechat, "47001", wechatError(47001, "data format error"))
        }
        guard let openID = send["touser"]?.string, !openID.isEmpty else {
            return reject(.wechat, "40003", wechatError(40003, "invalid openid"))
        }
        guard let templateID = send["template_id"]?.string, !templateID.isEmpty,
            configuration.wechatTemplates.isEmpty || configuration.wechatTemplates.contains(templateID)
        else {
            return reject(.wechat, "40037", wechatError(40037, "invalid template_id"))
        }
        let fields = (send["data"]?.object ?? [:]).sorted { $0.key < $1.key }
        let data = fields.compactMap { key, value in value["value"]?.string.map { (key, $0) } }
        guard !data.isEmpty, data.count == fields.count else {
            return reject(.wechat, "47001", wechatError(47001, "data format error"))
        }
        let clientMessageID = send["client_msg_id"]?.string
        if let clientMessageID, clientMessageID.utf8.count > 64 {
            return reject(.wechat, "45067", wechatError(45067, "clientmsgid size out of limit"))
        }
        return wechatSend(
            openID: openID, template: templateID, text: data.map { "\($0.0): \($0.1)" }.joined(separator: "\n"),
            parameters: data.map { $0.1 }, clientMessageID: clientMessageID
        )
    }

    private func checkToken(_ token: String?) -> SimResponse? {
        let now = now()
        switch state.withLock({ $0.wechat.check(token, now: now) }) {
        case .valid: return nil
        case .missing: return reject(.wechat, "41001", wechatError(41001, "access_token missing"))
        case .expired: return reject(.wechat, "42001", wechatError(42001, "access_token expired"))
        case .invalid:
            return reject(
                .wechat, "40001", wechatError(40001, "invalid credential, access_token is invalid or not latest"))
        }
    }

    private func wechatSend(
        openID: String, template: String?, text: String, parameters: [String]?, clientMessageID: String? = nil
    ) -> SimResponse {
        let channel = Channel.wechat
        let drawn = draw(channel)
        let delay = drawn.delayMs
        if drawn.fault == .error || drawn.fault == .timeout { return wechatError(-1, "system error").delayed(delay) }

        let now = now()
        // errcode, errmsg, msgid
        let outcome: (Int, String, String) = state.withLock { s in
            s.wechat.roll(now: now)
            // "For the same openid and client_msg_id only one message is sent": a repeat within the window is
            // answered as the first was, and not delivered again.
            let repeatKey = clientMessageID.map { "\(openID)|\($0)" }
            if let repeatKey, let first = s.wechatClientMessageIDs[repeatKey],
                now - first.at < s.behaviour.wechatClientMessageIDWindowSeconds
            {
                s.recorder.count(channel) { $0.repeatsDropped += 1 }
                return (0, "ok", first.msgID)
            }
            if s.takeGlobal(channel, now: now) != nil {
                s.recorder.count(channel) { $0.throttled += 1 }
                return (45009, "api freq out of limit", "")
            }
            if !s.behaviour.rateLimits {
                // No limits at all: quotas are limits too.
            } else if template == nil {
                guard s.wechat.customSends < s.behaviour.wechatCustomDailyQuota else {
                    s.recorder.count(channel) { $0.throttled += 1 }
                    return (45009, "reach max api daily quota limit", "")
                }
            } else {
                guard s.wechat.templateSends < s.behaviour.wechatTemplateDailyQuota else {
                    s.recorder.count(channel) { $0.throttled += 1 }
                    return (45009, "reach max api daily quota limit", "")
                }
            }
            if s.isUnknown(channel, openID) { return (40003, "invalid openid", "") }
            if s.isBlocked(channel, openID) { return (43004, "require subscribe", "") }
            if template == nil, s.behaviour.enforceWindows {
                let key = "wechat|\(openID)"
                let length = s.windowLength[key] ?? 48 * 3600
                guard let last = s.lastInbound[key], now - last <= length else {
                    return (45015, "response out of time limit or subscription is canceled", "")
                }
                guard s.repliesLeft[key, default: 0] > 0 else { return (45047, "out of response count limit", "") }
                s.repliesLeft[key, default: 0] -= 1
            }
            if template == nil { s.wechat.customSends += 1 } else { s.wechat.templateSends += 1 }
            let msgID = template == nil ? "" : String(2_800_000_000 + s.nextCounter())
            if let repeatKey {
                if s.wechatClientMessageIDs.count >= 100_000 {  // forget ids whose window is over
                    let window = s.behaviour.wechatClientMessageIDWindowSeconds
                    s.wechatClientMessageIDs = s.wechatClientMessageIDs.filter { now - $0.value.at < window }
                }
                s.wechatClientMessageIDs[repeatKey] = (now, msgID)
            }
            s.recorder.record(
                channel: channel, recipient: openID, kind: template == nil ? "text" : "template", text: text,
                template: template, parameters: parameters, providerMessageID: msgID
            )
            return (0, "ok", msgID)
        }
        let (code, message, msgID) = outcome
        if code != 0 { return reject(channel, "\(code)", wechatError(code, message)).delayed(delay) }
        if template == nil { return SimResponse.json(.ok, "{\"errcode\":0,\"errmsg\":\"ok\"}").delayed(delay) }
        return SimResponse.json(.ok, "{\"errcode\":0,\"errmsg\":\"ok\",\"msgid\":\(msgID)}").delayed(delay)
    }

    /// `{errcode, errmsg}` with HTTP 200 and a request id appended, as WeChat does.
    func wechatError(_ code: Int, _ message: String) -> SimResponse {
        .json(.ok, "{\"errcode\":\(code),\"errmsg\":\(JSONText.quote("\(message) rid: \(traceID())"))}")
    }
}
