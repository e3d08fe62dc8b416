import BanditoreCore
import Crypto
import Foundation

/// The WhatsApp Business Cloud API shape: sends, their errors, webhooks and their signature.
public enum WhatsApp {
    public static let maxTextLength = 4096
    public static let maxTemplateBodyLength = 1024

    // MARK: Sends

    /// A free-text message (allowed within 24 h of the citizen's last message).
    public static func textMessage(
        apiVersion: String, phoneNumberID: String, token: String, to: String, body: String
    ) throws -> ProviderRequest {
        guard !body.isEmpty else { throw ChannelLimitError(channel: "whatsapp", field: "text.body", message: "empty") }
        guard body.count <= maxTextLength else {
            throw ChannelLimitError(
                channel: "whatsapp", field: "text.body", message: "\(body.count) characters, at most \(maxTextLength)"
            )
        }
        let json =
            "{\"messaging_product\":\"whatsapp\",\"recipient_type\":\"individual\",\"text\":{\"body\":"
            + JSONText.quote(body) + ",\"preview_url\":false},\"to\":" + JSONText.quote(to) + ",\"type\":\"text\"}"
        return request(apiVersion: apiVersion, phoneNumberID: phoneNumberID, token: token, json: json)
    }

    /// An approved template message with body parameters (allowed at any time).
    public static func templateMessage(
        apiVersion: String, phoneNumberID: String, token: String, to: String, template: String, language: String,
        parameters: [String]
    ) throws -> ProviderRequest {
        try validateTemplateParameters(parameters)
        var json = "{\"messaging_product\":\"whatsapp\",\"recipient_type\":\"individual\",\"template\":{"
        json += "\"components\":[{\"parameters\":["
        for (index, parameter) in parameters.enumerated() {
            if index > 0 { json += "," }
            json += "{\"text\":" + JSONText.quote(parameter) + ",\"type\":\"text\"}"
        }
        json += "],\"type\":\"body\"}],\"language\":{\"code\":" + JSONText.quote(language) + "},\"name\":"
        json += JSONText.quote(template) + "},\"to\":" + JSONText.quote(to) + ",\"type\":\"template\"}"
        return request(apiVersion: apiVersion, phoneNumberID: phoneNumberID, token: token, json: json)
    }

    /// Template parameters: non-empty, no newline or tab, no more than four spaces in a row, and together at most
    /// the body limit.
    public static func validateTemplateParameters(_ parameters: [String]) throws {
        for (index, parameter) in parameters.enumerated() {
            let field = "template.parameters[\(index)]"
            if parameter.isEmpty { throw ChannelLimitError(channel: "whatsapp", field: field, message: "empty") }
            // Bytes, not characters: this runs for every message a dispatcher (or the simulator) handles.
            var spaces = 0
            for byte in parameter.utf8 {
                switch byte {
                case 0x0A, 0x0D, 0x09:
                    throw ChannelLimitError(channel: "whatsapp", field: field, message: "contains a newline or a tab")
                case 0x20:
                    spaces += 1
                    if spaces > 4 {
                        throw ChannelLimitError(
                            channel: "whatsapp", field: field, message: "more than four spaces in a row"
                        )
                    }
                default:
                    spaces = 0
                }
            }
        }
        // Characters never outnumber UTF-8 bytes: count them only when the bytes are over the limit.
        if parameters.reduce(0, { $0 + $1.utf8.count }) > maxTemplateBodyLength,
            case let total = parameters.reduce(0, { $0 + $1.count }), total > maxTemplateBodyLength
        {
            throw ChannelLimitError(
                channel: "whatsapp", field: "template.parameters",
                message: "\(total) characters, at most \(maxTemplateBodyLength)"
            )
        }
    }

    private static func request(apiVersion: String, phoneNumberID: String, token: String, json: String)
        -> ProviderRequest
    {
        ProviderRequest(
            method: .post, path: "/\(apiVersion)/\(phoneNumberID)/messages",
            headers: ["Authorization": "Bearer \(token)", "Content-Type": "application/json"],
            body: Array(json.utf8)
        )
    }

    /// The outcome of a send: the message id (`wamid.…`), or how to handle the failure.
    public static func decodeSendResponse(status: Int, body: [UInt8]) -> Result<String, ProviderFailure> {
        let json = JSONValue.parse(body)
        if (200..<300).contains(status), let id = json?["messages"]?.array?.first?["id"]?.string {
            return .success(id)
        }
        guard let error = json?["error"], let code = error["code"]?.int else {
            if status == 429 { return .failure(.channelThrottled(retryAfter: nil, reason: "HTTP 429")) }
            if status == 401 { return .failure(.auth(reason: "HTTP 401")) }
            if status >= 500 || status == 408 { return .failure(.transient(reason: "HTTP \(status)")) }
            return .failure(.transient(reason: "HTTP \(status) without an error body"))
        }
        let message = error["message"]?.string ?? "error \(code)"
        return .failure(classify(code: code, message: message))
    }

    /// Classifies a Graph API error code (branch on the code, not the HTTP status).
    public static func classify(code: Int, message: String) -> ProviderFailure {
        switch code {
        case 130429, 4, 80007:
            return .channelThrottled(retryAfter: nil, reason: message)  // the number's or the app's throughput
        case 131048:
            return .rateLimited(retryAfter: nil, reason: message)
        case 131056:
            return .rateLimited(retryAfter: .seconds(6), reason: message)  // pair rate: about one per 6 s
        case 190, 0:
            return .auth(reason: message)
        case 131000, 2, 131016:
            return .transient(reason: message)
        default:
            // 131047 window closed, 131026 undeliverable, 131030/100 invalid, 10 and 200–299 permission,
            // 132000/132001/132012 template: none gets better by retrying.
            return .permanent(code: "\(code)", reason: message)
        }
    }

    // MARK: Webhooks

    /// Checks `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>` in constant time.
    public static func verifySignature(header: String?, body: [UInt8], appSecret: String) -> Bool {
        guard let header, header.hasPrefix("sha256=") else { return false }
        let expected = signature(body: body, appSecret: appSecret)
        return constantTimeEquals(Array(header.utf8), Array(expected.utf8))
    }

    /// The header value a correct sender puts on `body`.
    public static func signature(body: [UInt8], appSecret: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Array(appSecret.utf8)))
        return "sha256=" + hex(mac)
    }

    /// Answers the subscription handshake: the challenge when the token matches, nil (answer 403) otherwise.
    public static func verificationChallenge(query: [String: String], verifyToken: String) -> String? {
        guard query["hub.mode"] == "subscribe", let token = query["hub.verify_token"],
            constantTimeEquals(Array(token.utf8), Array(verifyToken.utf8)), let challenge = query["hub.challenge"]
        else { return nil }
        return challenge
    }

    /// What a webhook reports.
    public enum Event: Sendable, Hashable {
        case message(InboundMessage)
        case status(StatusUpdate)
    }

    public struct InboundMessage: Sendable, Hashable {
        public var from: String
        public var id: String
        public var timestamp: Date
        public var type: String
        /// The text, for text messages.
        public var text: String?
        public var profileName: String?
    }

    public struct StatusUpdate: Sendable, Hashable {
        /// The id of the message the status is about (as returned by the send).
        public var messageID: String
        /// `sent`, `delivered`, `read` or `failed`.
        public var status: String
        public var recipient: String
        public var timestamp: Date
        public var errorCode: Int?
        public var errorTitle: String?
    }

    /// Reads a webhook body (`object: whatsapp_business_account`).
    public static func decodeWebhook(_ body: [UInt8]) throws -> [Event] {
        guard let root = JSONValue.parse(body), root.isObject else {
            throw WebhookDecodingError("not a JSON object")
        }
        guard root["object"]?.string == "whatsapp_business_account" else {
            throw WebhookDecodingError("object is not whatsapp_business_account")
        }
        guard let entries = root["entry"]?.array else { throw WebhookDecodingError("no entry array") }
        var events: [Event] = []
        for entry in entries {
            for change in entry["changes"]?.array ?? [] {
                guard let value = change["value"], value.isObject else { continue }
                let contacts = value["contacts"]?.array ?? []
                func name(of waID: String) -> String? {
                    contacts.first { $0["wa_id"]?.string == waID }?["profile"]?["name"]?.string
                }
                for message in value["messages"]?.array ?? [] {
                    guard let from = message["from"]?.string, let id = message["id"]?.string,
                        let type = message["type"]?.string
                    else { throw WebhookDecodingError("message without from, id or type") }
                    events.append(
                        .message(
                            InboundMessage(
                                from: from, id: id, timestamp: date(message["timestamp"]), type: type,
                                text: message["text"]?["body"]?.string, profileName: name(of: from)
                            )))
                }
                for status in value["statuses"]?.array ?? [] {
                    guard let id = status["id"]?.string, let state = status["status"]?.string,
                        let recipient = status["recipient_id"]?.string
                    else { throw WebhookDecodingError("status without id, status or recipient_id") }
                    let error = status["errors"]?.array?.first
                    events.append(
                        .status(
                            StatusUpdate(
                                messageID: id, status: state, recipient: recipient,
                                timestamp: date(status["timestamp"]),
                                errorCode: error?["code"]?.int, errorTitle: error?["title"]?.string
                            )))
                }
            }
        }
        return events
    }

    /// WhatsApp's timestamps are strings of Unix seconds.
    private static func date(_ value: JSONValue?) -> Date {
        Date(timeIntervalSince1970: value?.string.flatMap(Double.init) ?? 0)
    }
}
