import Foundation

extension CitizenCommand {
    /// The command as JSON: the document `JSONEncoder` makes of it (any `JSONDecoder` reads it back, the date as
    /// seconds since 2001 as `JSONEncoder`'s default writes it), written by hand. Ingest publishes one per webhook,
    /// and `JSONEncoder`'s generic path cost as much as the rest of the webhook's decoding.
    public func json() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(320 + (text?.utf8.count ?? 0))
        out += #"{"id":"#.utf8
        JSONText.write(id, to: &out)
        field("channel", channel.rawValue, to: &out)
        field("address", address, to: &out)
        field("kind", kind.rawValue, to: &out)
        field("dedupeKey", dedupeKey, to: &out)
        field("topic", topic, to: &out)
        field("language", language?.rawValue, to: &out)
        field("reportedLanguage", reportedLanguage?.rawValue, to: &out)
        field("writtenIn", writtenIn?.rawValue, to: &out)
        field("leaveReason", leaveReason?.rawValue, to: &out)
        field("text", text, to: &out)
        if let report {
            out += #","report":{"providerMessageID":"#.utf8
            JSONText.write(report.providerMessageID, to: &out)
            field("status", report.status, to: &out)
            if let code = report.errorCode {
                out += #","errorCode":"#.utf8
                out += String(code).utf8
            }
            field("errorTitle", report.errorTitle, to: &out)
            out.append(UInt8(ascii: "}"))
        }
        out += #","receivedAt":"#.utf8
        out += receivedAt.timeIntervalSinceReferenceDate.description.utf8
        field("correlationID", correlationID, to: &out)
        out.append(UInt8(ascii: "}"))
        return out
    }

    private func field(_ key: StaticString, _ value: String?, to out: inout [UInt8]) {
        guard let value else { return }
        out += #",""#.utf8
        out += UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
        out += #"":"#.utf8
        JSONText.write(value, to: &out)
    }
}
