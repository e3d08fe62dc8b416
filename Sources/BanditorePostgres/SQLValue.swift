import Foundation

/// A Swift value that can be sent as a query parameter, in PostgreSQL's text format.
public protocol SQLEncodable: Sendable {
    /// The text PostgreSQL parses for this value, or nil for NULL.
    var postgresText: String? { get }
}

/// A Swift value that can be read from a column in PostgreSQL's text format.
public protocol SQLDecodable: Sendable {
    init(postgresText text: String) throws
    /// The value for SQL NULL; nil (the default) means NULL is an error for this type.
    static var postgresNull: Self? { get }
}

extension SQLDecodable {
    public static var postgresNull: Self? { nil }
}

/// A column's text that is not a value of the type asked for.
public struct DecodingFailure: Error {
    public let type: String
    public let text: String

    public init(type: String, text: String) {
        self.type = type
        self.text = text
    }
}

// MARK: - Scalars

extension String: SQLEncodable, SQLDecodable {
    public var postgresText: String? { self }
    public init(postgresText text: String) { self = text }
}

extension Substring: SQLEncodable {
    public var postgresText: String? { String(self) }
}

extension Bool: SQLEncodable, SQLDecodable {
    public var postgresText: String? { self ? "t" : "f" }
    public init(postgresText text: String) throws {
        switch text {
        case "t", "true": self = true
        case "f", "false": self = false
        default: throw DecodingFailure(type: "Bool", text: text)
        }
    }
}

extension SQLEncodable where Self: BinaryInteger {
    public var postgresText: String? { String(self) }
}

extension SQLDecodable where Self: FixedWidthInteger {
    public init(postgresText text: String) throws {
        guard let value = Self(text) else { throw DecodingFailure(type: "\(Self.self)", text: text) }
        self = value
    }
}

extension Int: SQLEncodable, SQLDecodable {}
extension Int64: SQLEncodable, SQLDecodable {}
extension Int32: SQLEncodable, SQLDecodable {}
extension Int16: SQLEncodable, SQLDecodable {}

extension Double: SQLEncodable, SQLDecodable {
    public var postgresText: String? {
        if isNaN { return "NaN" }
        if isInfinite { return self > 0 ? "Infinity" : "-Infinity" }
        return "\(self)"
    }
    public init(postgresText text: String) throws {
        guard let value = Double(text) else { throw DecodingFailure(type: "Double", text: text) }
        self = value
    }
}

extension UUID: SQLEncodable, SQLDecodable {
    public var postgresText: String? { uuidString.lowercased() }
    public init(postgresText text: String) throws {
        guard let value = UUID(uuidString: text) else { throw DecodingFailure(type: "UUID", text: text) }
        self = value
    }
}

extension Date: SQLEncodable, SQLDecodable {
    /// ISO 8601 in UTC with microseconds, which `timestamptz` reads exactly.
    public var postgresText: String? { SQLTimestamp.format(self) }
    /// Reads `timestamptz` output (`2026-11-23 10:00:00.123456+00`, any offset) and `timestamp` (as UTC).
    public init(postgresText text: String) throws {
        guard let date = SQLTimestamp.parse(text) else { throw DecodingFailure(type: "Date", text: text) }
        self = date
    }
}

/// The bytes of a `bytea` column.
public struct SQLBytes: SQLEncodable, SQLDecodable, Hashable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var postgresText: String? {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8](repeating: 0, count: 2 + bytes.count * 2)
        out[0] = UInt8(ascii: "\\")
        out[1] = UInt8(ascii: "x")
        for (i, byte) in bytes.enumerated() {
            out[2 + 2 * i] = digits[Int(byte >> 4)]
            out[3 + 2 * i] = digits[Int(byte & 0xf)]
        }
        return String(decoding: out, as: UTF8.self)
    }

    public init(postgresText text: String) throws {
        let utf8 = Array(text.utf8)
        guard utf8.count >= 2, utf8[0] == UInt8(ascii: "\\"), utf8[1] == UInt8(ascii: "x"), utf8.count % 2 == 0 else {
            throw DecodingFailure(type: "bytea", text: String(text.prefix(20)))
        }
        func nibble(_ c: UInt8) throws -> UInt8 {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: throw DecodingFailure(type: "bytea", text: String(text.prefix(20)))
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity((utf8.count - 2) / 2)
        var i = 2
        while i < utf8.count {
            bytes.append(try nibble(utf8[i]) << 4 | nibble(utf8[i + 1]))
            i += 2
        }
        self.bytes = bytes
    }
}

/// A `json` or `jsonb` value holding a Codable Swift value.
public struct SQLJSON<Value: Codable & Sendable>: SQLEncodable, SQLDecodable {
    public var value: Value
    public init(_ value: Value) { self.value = value }

    public var postgresText: String? {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) }
    }

    public init(postgresText text: String) throws {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        self.value = try decoder.decode(Value.self, from: Data(text.utf8))
    }
}

// MARK: - Optional and arrays

extension Optional: SQLEncodable where Wrapped: SQLEncodable {
    public var postgresText: String? { self?.postgresText }
}

extension Optional: SQLDecodable where Wrapped: SQLDecodable {
    public init(postgresText text: String) throws { self = try Wrapped(postgresText: text) }
    public static var postgresNull: Self? { .some(nil) }
}

extension Array: SQLEncodable where Element: SQLEncodable {
    /// An array literal: `{"a","b c",NULL}`.
    ///
    /// Built as UTF-8 bytes: a dispatcher's status batch writes five arrays of a thousand elements each.
    public var postgresText: String? {
        var out: [UInt8] = [UInt8(ascii: "{")]
        out.reserveCapacity(count * 12 + 2)
        for index in indices {
            if index > startIndex { out.append(UInt8(ascii: ",")) }
            guard let text = self[index].postgresText else {
                out += "NULL".utf8
                continue
            }
            out.append(UInt8(ascii: "\""))
            for byte in text.utf8 {
                // A quote or backslash never occurs inside a multi-byte UTF-8 sequence.
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { out.append(UInt8(ascii: "\\")) }
                out.append(byte)
            }
            out.append(UInt8(ascii: "\""))
        }
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }
}

extension Array: SQLDecodable where Element: SQLDecodable {
    /// Reads a one-dimensional array literal.
    public init(postgresText text: String) throws {
        guard let items = SQLArrayLiteral.parse(text) else {
            throw DecodingFailure(type: "array", text: String(text.prefix(40)))
        }
        self = try items.map { item in
            guard let item else {
                guard let null = Element.postgresNull else {
                    throw DecodingFailure(type: "array element", text: "NULL")
                }
                return null
            }
            return try Element(postgresText: item)
        }
    }
}

enum SQLArrayLiteral {
    static func parse(_ text: String) -> [String?]? {
        let chars = Array(text.unicodeScalars)
        guard chars.first == "{", chars.last == "}" else { return nil }
        var items: [String?] = []
        var i = 1
        let end = chars.count - 1
        if i == end { return [] }
        while i < end {
            if chars[i] == "\"" {
                var value = String.UnicodeScalarView()
                i += 1
                while i < end, chars[i] != "\"" {
                    if chars[i] == "\\" { i += 1 }
                    guard i < end else { return nil }
                    value.append(chars[i])
                    i += 1
                }
                i += 1  // closing quote
                items.append(String(value))
            } else {
                var value = String.UnicodeScalarView()
                while i < end, chars[i] != "," {
                    value.append(chars[i])
                    i += 1
                }
                let s = String(value).trimmingCharacters(in: .whitespaces)
                items.append(s.uppercased() == "NULL" ? nil : s)
            }
            if i < end {
                guard chars[i] == "," else { return nil }
                i += 1
            }
        }
        return items
    }
}

// MARK: - Timestamps

enum SQLTimestamp {
    static func format(_ date: Date) -> String {
        let micros = (date.timeIntervalSince1970 * 1_000_000).rounded()
        var seconds = Int(floor(micros / 1_000_000))
        let fraction = Int(micros - Double(seconds) * 1_000_000)
        var tm = tm()
        gmtime_r(&seconds, &tm)
        func pad(_ v: Int32, _ n: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, n - s.count)) + s
        }
        let frac = String(fraction)
        return "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2))T"
            + "\(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2))."
            + String(repeating: "0", count: 6 - frac.count) + frac + "Z"
    }

    /// `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]]`
    static func parse(_ text: String) -> Date? {
        let c = Array(text.utf8)
        guard c.count >= 19 else { return nil }
        func num(_ from: Int, _ count: Int) -> Int? {
            var v = 0
            for i in from..<(from + count) {
                guard i < c.count, c[i] >= 48, c[i] <= 57 else { return nil }
                v = v * 10 + Int(c[i] - 48)
            }
            return v
        }
        guard let year = num(0, 4), let month = num(5, 2), let day = num(8, 2), let hour = num(11, 2),
            let minute = num(14, 2), let second = num(17, 2)
        else { return nil }
        var i = 19
        var fraction = 0.0
        if i < c.count, c[i] == UInt8(ascii: ".") {
            i += 1
            var scale = 0.1
            while i < c.count, c[i] >= 48, c[i] <= 57 {
                fraction += Double(c[i] - 48) * scale
                scale /= 10
                i += 1
            }
        }
        var offset = 0
        if i < c.count, c[i] == UInt8(ascii: "+") || c[i] == UInt8(ascii: "-") {
            let sign = c[i] == UInt8(ascii: "-") ? -1 : 1
            guard let h = num(i + 1, 2) else { return nil }
            var m = 0
            var s = 0
            if i + 3 < c.count, c[i + 3] == UInt8(ascii: ":") { m = num(i + 4, 2) ?? 0 }
            if i + 6 < c.count, c[i + 6] == UInt8(ascii: ":") { s = num(i + 7, 2) ?? 0 }
            offset = sign * (h * 3600 + m * 60 + s)
        }
        // Days from the civil date (proleptic Gregorian), valid for every year PostgreSQL prints with 4 digits.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146097 + doe - 719468
        let seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset
        return Date(timeIntervalSince1970: Double(seconds) + fraction)
    }
}
