import BanditoreCore
import Foundation
import Testing

@Suite("Citizens' commands written and read as JSON by hand")
struct CitizenCommandJSONTests {
    static let commands: [CitizenCommand] = [
        CitizenCommand(channel: .telegram, address: "123456789", kind: .subscribe, dedupeKey: "telegram:42"),
        CitizenCommand(
            id: "cmd-\"1\"", channel: .wechat, address: "oSim\\x\u{1}", kind: .follow, dedupeKey: "wechat:7",
            topic: "Protezione Civile", language: .chinese, reportedLanguage: .english, writtenIn: .chinese,
            leaveReason: .unfollowed, text: "关注 学校\n\t“scuola”",
            receivedAt: Date(timeIntervalSince1970: 1_764_864_000.123456),
            correlationID: "corr-9"
        ),
        CitizenCommand(
            channel: .whatsapp, address: "393331234567", kind: .deliveryStatus,
            report: .init(
                providerMessageID: "wamid.HBg=", status: "failed", errorCode: 131_026,
                errorTitle: "Message undeliverable"),
            receivedAt: Date(timeIntervalSinceReferenceDate: 0)
        ),
        CitizenCommand(
            channel: .whatsapp, address: "393331234567", kind: .deliveryStatus,
            report: .init(providerMessageID: "wamid.X", status: "read"),
            receivedAt: Date(timeIntervalSinceReferenceDate: -1.5e9)
        ),
        CitizenCommand(channel: .telegram, address: "1", kind: .unsubscribe, leaveReason: .blocked, text: ""),
    ]

    @Test("JSONDecoder reads back the same command", arguments: commands)
    func roundTrip(command: CitizenCommand) throws {
        let decoded = try JSONDecoder().decode(CitizenCommand.self, from: Data(command.json()))
        #expect(decoded == command)
        #expect(decoded.receivedAt.timeIntervalSinceReferenceDate == command.receivedAt.timeIntervalSinceReferenceDate)
    }

    @Test(
        "read back by our reader, from our writer and from JSONEncoder, as JSONDecoder reads them", arguments: commands)
    func reader(command: CitizenCommand) throws {
        #expect(try CitizenCommand(json: command.json()) == command)
        let encoded = Array(try JSONEncoder().encode(command))
        let ours = try CitizenCommand(json: encoded)
        #expect(ours == command)
        #expect(ours == (try JSONDecoder().decode(CitizenCommand.self, from: Data(encoded))))
    }

    @Test("null optional fields, unknown fields and a date written as an integer are read as JSONDecoder reads them")
    func lenient() throws {
        let body = #"""
            {"id":"c1","channel":"telegram","address":"42","kind":"set-language","language":"zh","topic":null,
             "report":null,"receivedAt":786000000,"correlationID":"c1","future":{"x":[1]}}
            """#
        let ours = try CitizenCommand(json: Array(body.utf8))
        #expect(ours == (try JSONDecoder().decode(CitizenCommand.self, from: Data(body.utf8))))
        #expect(
            ours.language == .chinese && ours.topic == nil
                && ours.receivedAt == Date(timeIntervalSinceReferenceDate: 786_000_000))
    }

    @Test(
        "what JSONDecoder refuses, our reader refuses (the command goes to the dead-letter queue)",
        arguments: [
            "", "null", #"{"id":"c"}"#,
            #"{"id":"c","channel":"sms","address":"1","kind":"help","receivedAt":0,"correlationID":"c"}"#,
            #"{"id":"c","channel":"telegram","address":1,"kind":"help","receivedAt":0,"correlationID":"c"}"#,
            #"{"id":"c","channel":"telegram","address":"1","kind":"dance","receivedAt":0,"correlationID":"c"}"#,
            #"{"id":"c","channel":"telegram","address":"1","kind":"help","receivedAt":"today","correlationID":"c"}"#,
            #"{"id":"c","channel":"telegram","address":"1","kind":"help","receivedAt":0}"#,
            #"{"id":"c","channel":"telegram","address":"1","kind":"help","language":"fr","receivedAt":0,"correlationID":"c"}"#,
            #"{"id":"c","channel":"telegram","address":"1","kind":"unsubscribe","leaveReason":"bored","receivedAt":0,"correlationID":"c"}"#,
            #"{"id":"c","channel":"whatsapp","address":"1","kind":"delivery-status","report":{"status":"read"},"receivedAt":0,"correlationID":"c"}"#,
            #"{"id":"c","channel":"whatsapp","address":"1","kind":"delivery-status","report":[],"receivedAt":0,"correlationID":"c"}"#,
            #"{"id":"c","channel":"whatsapp","address":"1","kind":"delivery-status","report":{"providerMessageID":"w","status":"failed","errorCode":"131026"},"receivedAt":0,"correlationID":"c"}"#,
        ]
    )
    func refused(body: String) {
        #expect(throws: (any Error).self) { try JSONDecoder().decode(CitizenCommand.self, from: Data(body.utf8)) }
        #expect(throws: JSONReadingError.self) { try CitizenCommand(json: Array(body.utf8)) }
    }

    @Test("the same document as JSONEncoder's", arguments: commands)
    func sameDocument(command: CitizenCommand) throws {
        let ours = try JSONSerialization.jsonObject(with: Data(command.json())) as? NSDictionary
        let encoder = try JSONSerialization.jsonObject(with: JSONEncoder().encode(command)) as? NSDictionary
        #expect(ours != nil)
        #expect(ours == encoder)
    }
}
