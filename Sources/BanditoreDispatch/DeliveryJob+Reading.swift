import BanditoreChannels
import BanditoreCore
import Foundation

extension DeliveryJob {
    /// Reads a job's JSON as `JSONDecoder` reads it (the same fields required, optional fields absent or null,
    /// unknown fields ignored), with our own JSON reader: a job carries hundreds of recipients, and decoding them
    /// through `Decodable` was an eighth of a dispatcher's work.
    public init(json body: [UInt8]) throws {
        guard let root = JSONValue.parse(body), root.isObject else { throw JobDecodingError("not a JSON object") }
        guard case .object(let languages)? = root["messages"] else { throw JobDecodingError("messages: not an object") }
        var messages: [Language: RenderedMessage] = [:]
        for (code, value) in languages {
            guard let language = Language(rawValue: code) else { throw JobDecodingError("messages: language \(code)") }
            messages[language] = try RenderedMessage(json: value)
        }
        guard let list = root["recipients"]?.array else { throw JobDecodingError("recipients: not an array") }
        let recipients = try list.map { value in
            guard value.isObject else { throw JobDecodingError("recipients: not an object") }
            return Recipient(
                deliveryID: try value.optional("deliveryID", \.int64),
                subscriberID: try value.optional("subscriberID", \.int64),
                address: try value.required("address", \.string),
                language: try value.required("language") { $0.string.flatMap(Language.init(rawValue:)) }
            )
        }
        self.init(
            id: try root.required("id", \.string),
            bulletinID: try root.optional("bulletinID") { $0.string.flatMap(UUID.init(uuidString:)) },
            channel: try root.required("channel") { $0.string.flatMap(Channel.init(rawValue:)) },
            urgent: try root.required("urgent", \.bool),
            attempt: try root.required("attempt", \.int),
            messages: messages,
            recipients: recipients,
            correlationID: try root.optional("correlationID", \.string),
            lastError: try root.optional("lastError", \.string)
        )
    }
}

extension RenderedMessage {
    init(json value: JSONValue) throws {
        guard value.isObject else { throw JobDecodingError("message: not an object") }
        self.init(
            kind: try value.required("kind") { $0.string.flatMap(Kind.init(rawValue:)) },
            text: try value.optional("text", \.string),
            template: try value.optional("template", \.string),
            templateLanguage: try value.optional("templateLanguage", \.string),
            parameters: try value.optional("parameters") { list in
                try list.array.map { try $0.map { try JSONValue.required($0, "parameters", \.string) } }
            },
            fields: try value.optional("fields") { object in
                guard case .object(let fields) = object else { return nil }
                var out: [String: String] = [:]
                for (key, field) in fields { out[key] = try JSONValue.required(field, "fields.\(key)", \.string) }
                return out
            },
            url: try value.optional("url", \.string)
        )
    }
}

/// A delivery job's body that is not a job; the job goes to the dead-letter queue.
struct JobDecodingError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = "undecodable job: \(description)" }
}

extension JSONValue {
    /// The field `key` read by `read`; throws when it is absent, null or of another kind.
    fileprivate func required<T>(_ key: String, _ read: (JSONValue) throws -> T?) throws -> T {
        guard let field = self[key] else { throw JobDecodingError("\(key): missing") }
        return try JSONValue.required(field, key, read)
    }

    fileprivate static func required<T>(_ value: JSONValue, _ key: String, _ read: (JSONValue) throws -> T?) throws -> T {
        guard let out = try read(value) else { throw JobDecodingError("\(key): not what was expected") }
        return out
    }

    /// The field `key` read by `read`, nil when absent or null; throws when it is of another kind.
    fileprivate func optional<T>(_ key: String, _ read: (JSONValue) throws -> T?) throws -> T? {
        guard let field = self[key] else { return nil }
        if case .null = field { return nil }
        return try JSONValue.required(field, key, read)
    }
}
