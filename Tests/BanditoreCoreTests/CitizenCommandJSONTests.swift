import BanditoreCore
import Foundation
import Testing

@Suite("Citizens' commands written as JSON by hand")
struct CitizenCommandJSONTests {
    static let commands: [CitizenCommand] = [
        CitizenCommand(channel: .telegram, address: "123456789", kind: .subscribe, dedupeKey: "telegram:42"),
        CitizenCommand(
            id: "cmd-\"1\"", channel: .wechat, address: "oSim\\x\u{1}", kind: .follow, dedupeKey: "wechat:7",
            topic: "Protezione Civile", language: .chinese, reportedLanguage: .english, writtenIn: .chinese,
            leaveReason: .unfollowed, text: "关注 学校\n\t“scuola”", receivedAt: Date(timeIntervalSince1970: 1_764_864_000.123456),
            correlationID: "corr-9"
        ),
        CitizenCommand(
            channel: .whatsapp, address: "393331234567", kind: .deliveryStatus,
            report: .init(providerMessageID: "wamid.HBg=", status: "failed", errorCode: 131_026, errorTitle: "Message undeliverable"),
            receivedAt: Date(timeIntervalSinceReferenceDate: 0)
        ),
        CitizenCommand(
            channel: .whatsapp, address: "393331234567", kind: .deliveryStatus,
            report: .init(providerMessageID: "wamid.X", status: "read"), receivedAt: Date(timeIntervalSinceReferenceDate: -1.5e9)
        ),
        CitizenCommand(channel: .telegram, address: "1", kind: .unsubscribe, leaveReason: .blocked, text: ""),
    ]

    @Test("JSONDecoder reads back the same command", arguments: commands)
    func roundTrip(command: CitizenCommand) throws {
        let decoded = try JSONDecoder().decode(CitizenCommand.self, from: Data(command.json()))
        #expect(decoded == command)
        #expect(decoded.receivedAt.timeIntervalSinceReferenceDate == command.receivedAt.timeIntervalSinceReferenceDate)
    }

    @Test("the same document as JSONEncoder's", arguments: commands)
    func sameDocument(command: CitizenCommand) throws {
        let ours = try JSONSerialization.jsonObject(with: Data(command.json())) as? NSDictionary
        let encoder = try JSONSerialization.jsonObject(with: JSONEncoder().encode(command)) as? NSDictionary
        #expect(ours != nil)
        #expect(ours == encoder)
    }
}
