import Foundation

/// Reading what the provider simulator recorded (`/sim/messages`, `/sim/stats`), for the tests and the benchmarks.
public enum SimulatorRecords {
    /// Decodes the simulator's JSON: dates in ISO 8601, with or without fractions of a second, or in seconds.
    public static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            if let seconds = try? container.decode(Double.self) { return Date(timeIntervalSinceReferenceDate: seconds) }
            let text = try container.decode(String.self)
            let fractional = ISO8601DateFormatter()
            fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            guard let date = fractional.date(from: text) ?? ISO8601DateFormatter().date(from: text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "date \(text)")
            }
            return date
        }
        return decoder
    }()

    /// Every message the simulator accepted after `after` (on `channel`, if given), in order, read a page at a time:
    /// `seq` gives a message's sequence number, `get` fetches a path from the simulator.
    public static func messages<Message: Decodable>(
        after: Int = 0, channel: String? = nil, seq: (Message) -> Int, get: (String) async throws -> Data
    ) async throws -> [Message] {
        var out: [Message] = []
        var cursor = after
        while true {
            let path = "/sim/messages?" + (channel.map { "channel=\($0)&" } ?? "") + "after=\(cursor)&limit=50000"
            let page = try decoder.decode(MessagePage<Message>.self, from: try await get(path))
            guard let last = page.messages.last else { return out }
            out += page.messages
            cursor = seq(last)
        }
    }
}

/// One page of `/sim/messages`.
private struct MessagePage<Message: Decodable>: Decodable {
    var messages: [Message]
}
