import Foundation
import NIOHTTP1

/// A provider's answer, before it becomes an HTTP response.
public struct SimResponse: Sendable {
    public var status: HTTPResponseStatus
    public var contentType: String
    public var body: String
    /// How long to hold the answer (latency, timeouts).
    public var delayMs = 0.0

    func delayed(_ milliseconds: Double) -> SimResponse {
        var copy = self
        copy.delayMs = milliseconds
        return copy
    }

    static func json(_ status: HTTPResponseStatus = .ok, _ body: String) -> SimResponse {
        SimResponse(status: status, contentType: "application/json; charset=utf-8", body: body)
    }

    static func json(_ status: HTTPResponseStatus = .ok, encoding value: some Encodable) -> SimResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // ISO 8601 with milliseconds: tests measure rates from `acceptedAt`.
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
        }
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return json(status, String(decoding: data, as: UTF8.self))
    }

    static func text(_ status: HTTPResponseStatus = .ok, _ body: String) -> SimResponse {
        SimResponse(status: status, contentType: "text/plain; charset=utf-8", body: body)
    }

}

/// Reads `a=1&b=2` (form bodies and queries), percent- and plus-decoded.
func parseForm(_ text: Substring) -> [String: String] {
    var out: [String: String] = [:]
    for pair in text.utf8.split(separator: UInt8(ascii: "&")) {
        let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
        out[formDecode(parts[0])] = parts.count > 1 ? formDecode(parts[1]) : ""
    }
    return out
}

/// `+` to space and `%XX` to its byte; a malformed escape is kept as written.
private func formDecode(_ bytes: Substring.UTF8View.SubSequence) -> String {
    guard bytes.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) else {
        return String(Substring(bytes))
    }
    func hex(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    var index = bytes.startIndex
    while index < bytes.endIndex {
        let byte = bytes[index]
        if byte == UInt8(ascii: "+") {
            out.append(0x20)
        } else if byte == UInt8(ascii: "%"), bytes.distance(from: index, to: bytes.endIndex) >= 3,
            let high = hex(bytes[bytes.index(after: index)]), let low = hex(bytes[bytes.index(index, offsetBy: 2)])
        {
            out.append(high << 4 | low)
            index = bytes.index(index, offsetBy: 3)
            continue
        } else {
            out.append(byte)
        }
        index = bytes.index(after: index)
    }
    return String(decoding: out, as: UTF8.self)
}
