import BanditoreCore
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Writes one JSON object per line to standard error: `ts`, `level`, `service`, `logger`, `msg`, then metadata,
/// keys in sorted order. Written by hand (``JSONText``) with the time formatted from the clock's UTC fields, so that
/// a line costs no Foundation encoder nor a date formatter.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    private let label: String
    private let service: String
    private let write: @Sendable ([UInt8]) -> Void

    private static let lock = Mutex(())

    public init(label: String, service: String) {
        self.init(label: label, service: service) { bytes in
            Self.lock.withLock { _ in FileHandle.standardError.write(Data(bytes)) }
        }
    }

    /// A handler whose lines go to `write` (one call a line, its newline included).
    init(label: String, service: String, write: @escaping @Sendable ([UInt8]) -> Void) {
        self.label = label
        self.service = service
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [String: String] = [
            "ts": JSONText.quote(Self.timestamp(Date())),
            "level": JSONText.quote(event.level.rawValue),
            "service": JSONText.quote(service),
            "logger": JSONText.quote(label),
            "msg": JSONText.quote("\(event.message)"),
        ]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) {
            fields[key] = Self.json(value)
        }
        var line = "{"
        for (index, key) in fields.keys.sorted().enumerated() {
            if index > 0 { line += "," }
            line += JSONText.quote(key) + ":" + fields[key]!
        }
        line += "}\n"
        write(Array(line.utf8))
    }

    private static func json(_ value: Logger.MetadataValue) -> String {
        switch value {
        case .string(let s): JSONText.quote(s)
        case .stringConvertible(let s): JSONText.quote(s.description)
        case .array(let a): "[" + a.map(json).joined(separator: ",") + "]"
        case .dictionary(let d):
            "{" + d.keys.sorted().map { JSONText.quote($0) + ":" + json(d[$0]!) }.joined(separator: ",") + "}"
        }
    }

    /// RFC 3339 in UTC with milliseconds: `2026-12-06T23:14:34.123Z`.
    static func timestamp(_ date: Date) -> String {
        let milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        var seconds = time_t(milliseconds / 1000)
        var fields = tm()
        gmtime_r(&seconds, &fields)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let millis = Int(milliseconds % 1000)
        let fraction = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(fields.tm_year + 1900)-\(two(fields.tm_mon + 1))-\(two(fields.tm_mday))T\(two(fields.tm_hour)):"
            + "\(two(fields.tm_min)):\(two(fields.tm_sec)).\(fraction)Z"
    }
}
