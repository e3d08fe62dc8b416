import Foundation
import Logging
import Synchronization
import Testing

@testable import BanditoreRuntime

/// Lines a handler wrote, captured instead of going to standard error.
private final class Lines: Sendable {
    private let lines = Mutex<[String]>([])
    func add(_ bytes: [UInt8]) { lines.withLock { $0.append(String(decoding: bytes, as: UTF8.self)) } }
    var all: [String] { lines.withLock { $0 } }
}

@Suite("JSON log lines")
struct JSONLogHandlerTests {
    @Test(
        "one JSON object a line: time, level, service, logger, message, then the metadata, the event's over the handler's"
    )
    func fields() throws {
        let lines = Lines()
        var logger = Logger(label: "banditore.test") { label in
            JSONLogHandler(label: label, service: "banditore-test", write: { lines.add($0) })
        }
        logger[metadataKey: "channel"] = "telegram"
        logger[metadataKey: "bulletin.id"] = "b-1"
        logger.info(
            "sent \"quoted\"\nnext line",
            metadata: [
                "bulletin.id": "b-2", "count": "\(3)", "list": ["a", "b"], "nested": ["k": "v", "n": ["x"]],
                "text": "tab\there, 中文, emoji 🚌, control \u{1}",
            ]
        )
        logger.debug("below the level: not written")
        #expect(lines.all.count == 1)
        let line = try #require(lines.all.first)
        #expect(line.hasSuffix("\n") && !line.dropLast().contains("\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["level"] as? String == "info")
        #expect(object["service"] as? String == "banditore-test")
        #expect(object["logger"] as? String == "banditore.test")
        #expect(object["msg"] as? String == "sent \"quoted\"\nnext line")
        #expect(object["channel"] as? String == "telegram")
        #expect(object["bulletin.id"] as? String == "b-2")
        #expect(object["count"] as? String == "3")
        #expect(object["list"] as? [String] == ["a", "b"])
        let nested = try #require(object["nested"] as? [String: Any])
        #expect(nested["k"] as? String == "v" && nested["n"] as? [String] == ["x"])
        #expect(object["text"] as? String == "tab\there, 中文, emoji 🚌, control \u{1}")
        // The time: RFC 3339 in UTC with milliseconds, within a second of now.
        let ts = try #require(object["ts"] as? String)
        #expect(ts.count == 24 && ts.hasSuffix("Z"), "\(ts)")
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let time = try #require(formatter.date(from: ts))
        #expect(abs(time.timeIntervalSinceNow) < 5)
        // Keys in sorted order, as before: a line reads the same from one run to the next.
        let keys = object.keys.sorted()
        let order = keys.compactMap { key in line.range(of: "\"\(key)\":")?.lowerBound }
        #expect(order == order.sorted())
    }

    @Test("times: midnight, leap day and milliseconds written exactly")
    func timestamps() {
        #expect(JSONLogHandler.timestamp(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
        #expect(JSONLogHandler.timestamp(Date(timeIntervalSince1970: 1_709_164_799.999)) == "2024-02-28T23:59:59.999Z")
        #expect(JSONLogHandler.timestamp(Date(timeIntervalSince1970: 1_709_251_200.5)) == "2024-03-01T00:00:00.500Z")
        #expect(JSONLogHandler.timestamp(Date(timeIntervalSince1970: 1_709_164_800.042)) == "2024-02-29T00:00:00.042Z")
    }
}
