import BanditoreCore
import Crypto
import Foundation

/// The WeChat Official Account shape: access tokens, custom and template sends, inbound XML and its signature.
/// Errors come with HTTP 200 and a non-zero `errcode`.
public enum WeChat {
    /// Custom text messages: about 2,048 bytes of UTF-8.
    public static let maxCustomTextBytes = 2048
    /// A template field's value.
    public static let maxTemplateValueLength = 200

    // MARK: Tokens

    public static func tokenRequest(appID: String, secret: String) -> ProviderRequest {
        ProviderRequest(
            method: .get,
            path: "/cgi-bin/token?grant_type=client_credential&appid=\(query(appID))&secret=\(query(secret))"
        )
    }

    /// An access token and how long it lives.
    public struct AccessToken: Sendable, Hashable {
        public var token: String
        public var expiresIn: Duration

        public init(token: String, expiresIn: Duration) {
            self.token = token
            self.expiresIn = expiresIn
        }
    }

    public static func decodeToken(body: [UInt8]) -> Result<AccessToken, ProviderFailure> {
        let json = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]
        if let token = json?["access_token"] as? String, let expires = json?["expires_in"] as? Int {
            return .success(AccessToken(token: token, expiresIn: .seconds(expires)))
        }
        return .failure(classify(json))
    }

    // MARK: Sends

    public static func customText(accessToken: String, openID: String, content: String) throws -> ProviderRequest {
        guard !content.isEmpty else {
            throw ChannelLimitError(channel: "wechat", field: "text.content", message: "empty")
        }
        guard content.utf8.count <= maxCustomTextBytes else {
            throw ChannelLimitError(
                channel: "wechat", field: "text.content",
                message: "\(content.utf8.count) bytes, at most \(maxCustomTextBytes)"
            )
        }
        return post(
            "/cgi-bin/message/custom/send", accessToken: accessToken,
            json: "{\"msgtype\":\"text\",\"text\":{\"content\":" + JSONText.quote(content) + "},\"touser\":"
                + JSONText.quote(openID) + "}"
        )
    }

    public static func template(
        accessToken: String, openID: String, templateID: String, data: [String: String], url: String? = nil,
        clientMessageID: String? = nil
    ) throws -> ProviderRequest {
        // Characters never outnumber UTF-8 bytes: counted (grapheme by grapheme, slow) only when the bytes are over
        // the limit; this runs for every message a dispatcher sends.
        for (key, value) in data
        where value.isEmpty || (value.utf8.count > maxTemplateValueLength && value.count > maxTemplateValueLength) {
            throw ChannelLimitError(
                channel: "wechat", field: "data.\(key)",
                message: value.isEmpty ? "empty" : "\(value.count) characters, at most \(maxTemplateValueLength)"
            )
        }
        var json = "{"
        if let clientMessageID { json += "\"client_msg_id\":" + JSONText.quote(clientMessageID) + "," }
        json += "\"data\":{"
        for (index, key) in data.keys.sorted().enumerated() {
            if index > 0 { json += "," }
            json += JSONText.quote(key) + ":{\"value\":" + JSONText.quote(data[key]!) + "}"
        }
        json += "},\"template_id\":" + JSONText.quote(templateID) + ",\"touser\":" + JSONText.quote(openID)
        if let url { json += ",\"url\":" + JSONText.quote(url) }
        return post("/cgi-bin/message/template/send", accessToken: accessToken, json: json + "}")
    }

    private static func post(_ path: String, accessToken: String, json: String) -> ProviderRequest {
        ProviderRequest(
            method: .post, path: "\(path)?access_token=\(query(accessToken))",
            headers: ["Content-Type": "application/json"],
            body: Array(json.utf8)
        )
    }

    /// The outcome of a send: the `msgid` (template sends; custom sends have none), or the failure.
    public static func decodeSendResponse(status: Int, body: [UInt8]) -> Result<Int64?, ProviderFailure> {
        guard (200..<300).contains(status) else {
            return .failure(
                status == 429 ? .rateLimited(retryAfter: nil, reason: "HTTP 429") : .transient(reason: "HTTP \(status)")
            )
        }
        guard let json = JSONValue.parse(body) else { return .failure(.transient(reason: "unreadable response")) }
        if json["errcode"]?.int == 0 {
            return .success(json["msgid"]?.int64)
        }
        return .failure(classify(code: json["errcode"]?.int, message: json["errmsg"]?.string))
    }

    static func classify(_ json: [String: Any]?) -> ProviderFailure {
        classify(code: json?["errcode"] as? Int, message: json?["errmsg"] as? String)
    }

    static func classify(code: Int?, message: String?) -> ProviderFailure {
        guard let code else { return .transient(reason: "unreadable response") }
        let message = message ?? "errcode \(code)"
        switch code {
        case -1: return .transient(reason: message)  // system busy
        case 40001, 40014, 42001: return .auth(reason: message)
        case 45009: return .rateLimited(retryAfter: nil, reason: message)  // frequency or daily quota
        default:
            // 43004 not a follower, 40003 invalid openid, 45015 outside the 48 h window, 45047 reply quota,
            // 45002 too long, 40037 bad template.
            return .permanent(code: "\(code)", reason: message)
        }
    }

    // MARK: Inbound

    /// The sha1 of the sorted `[token, timestamp, nonce]` joined, as lowercase hex.
    public static func signature(token: String, timestamp: String, nonce: String) -> String {
        let joined = [token, timestamp, nonce].sorted().joined()
        return hex(Insecure.SHA1.hash(data: Array(joined.utf8)))
    }

    /// Checks the `signature` query parameter in constant time.
    public static func verifySignature(query: [String: String], token: String) -> Bool {
        guard let signature = query["signature"], let timestamp = query["timestamp"], let nonce = query["nonce"] else {
            return false
        }
        let expected = Self.signature(token: token, timestamp: timestamp, nonce: nonce)
        return constantTimeEquals(Array(signature.lowercased().utf8), Array(expected.utf8))
    }

    /// The `echostr` to answer the server-address check with, when the signature holds.
    public static func echo(query: [String: String], token: String) -> String? {
        verifySignature(query: query, token: token) ? query["echostr"] : nil
    }

    /// A pushed message or event.
    public struct Inbound: Sendable, Hashable {
        public var toUser: String
        public var fromUser: String
        public var createTime: Int64
        public var messageType: String
        public var content: String?
        public var messageID: String?
        public var event: String?
        public var eventKey: String?

        /// The key that identifies a retry of the same push: `MsgId`, or `FromUserName`+`CreateTime` for events.
        public var dedupeKey: String { messageID ?? "\(fromUser):\(createTime):\(event ?? "")" }
    }

    /// Reads the XML of a push.
    public static func decodeInbound(_ body: [UInt8]) throws -> Inbound {
        let fields = try FlatXML.parse(body)
        guard let to = fields["ToUserName"], let from = fields["FromUserName"], let type = fields["MsgType"],
            let time = fields["CreateTime"].flatMap({ Int64($0.trimmingCharacters(in: .whitespaces)) })
        else { throw WebhookDecodingError("missing ToUserName, FromUserName, CreateTime or MsgType") }
        return Inbound(
            toUser: to, fromUser: from, createTime: time, messageType: type, content: fields["Content"],
            messageID: fields["MsgId"], event: fields["Event"], eventKey: fields["EventKey"]
        )
    }

    /// A passive text reply (To and From swapped).
    public static func passiveReply(to inbound: Inbound, content: String, now: Int64) -> String {
        "<xml><ToUserName><![CDATA[\(cdata(inbound.fromUser))]]></ToUserName>"
            + "<FromUserName><![CDATA[\(cdata(inbound.toUser))]]></FromUserName>"
            + "<CreateTime>\(now)</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            + "<Content><![CDATA[\(cdata(content))]]></Content></xml>"
    }

    private static func cdata(_ text: String) -> String {
        text.replacingOccurrences(of: "]]>", with: "]]]]><![CDATA[>")
    }

    /// `value` percent-encoded for a query string: every byte of its UTF-8 but RFC 3986's unreserved ASCII
    /// (letters, digits, `-._~`). Byte by byte: Foundation's `addingPercentEncoding` cost a quarter of a WeChat
    /// dispatcher's CPU, and its `.alphanumerics` would have let non-ASCII letters through unencoded.
    static func query(_ value: String) -> String {
        let hex: [UInt8] = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(value.utf8.count)
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.append(byte)
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
