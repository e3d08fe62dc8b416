import BanditoreChannels
import BanditoreCore
import Foundation
import Testing

@testable import BanditoreIngest

/// A provider's JSON webhook with any one value swapped for an odd one (a negative or huge number, another type),
/// or with bytes changed at random, is decoded and normalised into commands or refused with an error: never a trap.
@Suite("Webhook JSON: odd values and random bytes")
struct WebhookRobustnessTests {
    static let telegram = [
        #"{"update_id":900000001,"message":{"message_id":17,"from":{"id":123456789,"is_bot":false,"first_name":"Maria","language_code":"it"},"chat":{"id":123456789,"first_name":"Maria","type":"private"},"date":1767261600,"text":"/start scuola","entities":[{"offset":0,"length":6,"type":"bot_command"}]}}"#,
        #"{"update_id":900000002,"my_chat_member":{"chat":{"id":123456789,"type":"private"},"from":{"id":123456789,"is_bot":false,"first_name":"Maria"},"date":1767265200,"old_chat_member":{"user":{"id":7770001,"is_bot":true,"first_name":"Comune"},"status":"member"},"new_chat_member":{"user":{"id":7770001,"is_bot":true,"first_name":"Comune"},"status":"kicked"}}}"#,
    ]
    static let whatsapp = [
        #"{"object":"whatsapp_business_account","entry":[{"id":"1022901","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"390610000000","phone_number_id":"1065403"},"contacts":[{"profile":{"name":"Maria"},"wa_id":"393470000001"}],"messages":[{"from":"393470000001","id":"wamid.HBgMOTMxQkI=","timestamp":"1767261600","type":"text","text":{"body":"segui scuola"}}]}}]}]}"#,
        #"{"object":"whatsapp_business_account","entry":[{"id":"1022901","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"390610000000","phone_number_id":"1065403"},"statuses":[{"id":"wamid.HBgMOTMxQUE=","status":"failed","timestamp":"1767261660","recipient_id":"393470000001","errors":[{"code":131047,"title":"Re-engagement message"}]}]}}]}]}"#,
    ]
    static let oddValues = [
        "-1", "0", "1.5", "1e999", "-9223372036854775809", "18446744073709551616", #""""#, #""\u0000""#,
        #""/""#, #""\ud800""#, "[]", "{}", "[{}]", "null", "true",
    ]

    /// Decodes and normalises as ingest does; the commands must be writable too.
    static func ingest(_ path: String, _ body: [UInt8]) {
        var commands: [CitizenCommand] = []
        if path == "telegram" {
            if let update = try? Telegram.decodeUpdate(body), let command = WebhookNormaliser.telegram(update) {
                commands.append(command)
            }
        } else if let events = try? WhatsApp.decodeWebhook(body) {
            commands += WebhookNormaliser.whatsapp(events)
        }
        for command in commands { _ = command.json() }
    }

    @Test("every value of the samples swapped, one at a time, for odd ones")
    func oddValuesEverywhere() throws {
        // A value after a key: `":` then a number, a string or a literal (the match starts at the colon).
        let value = try Regex(#"":(-?[0-9]+|"(?:[^"\\]|\\.)*"|true|false|null)"#)
        var tried = 0
        for (path, samples) in [("telegram", Self.telegram), ("whatsapp", Self.whatsapp)] {
            for sample in samples {
                // The sample itself decodes.
                if path == "telegram" {
                    _ = try Telegram.decodeUpdate(Array(sample.utf8))
                } else {
                    #expect(!(try WhatsApp.decodeWebhook(Array(sample.utf8))).isEmpty)
                }
                for match in sample.matches(of: value) {
                    for odd in Self.oddValues {
                        var body = sample
                        body.replaceSubrange(match.range, with: "\":" + odd)
                        Self.ingest(path, Array(body.utf8))
                        tried += 1
                    }
                }
            }
        }
        #expect(tried > 500)
    }

    @Test("the samples with bytes changed, cut or repeated at random")
    func randomBytes() {
        var generator = SplitMix64(seed: 20_261_205)
        for round in 0..<4_000 {
            let path = round % 2 == 0 ? "telegram" : "whatsapp"
            let samples = path == "telegram" ? Self.telegram : Self.whatsapp
            var body = Array(samples[Int(generator.next() % UInt64(samples.count))].utf8)
            switch round % 4 {
            case 0, 1:
                for _ in 0..<(1 + Int(generator.next() % 4)) {
                    body[Int(generator.next() % UInt64(body.count))] = UInt8(truncatingIfNeeded: generator.next())
                }
            case 2:
                body = Array(body.prefix(Int(generator.next() % UInt64(body.count))))
            default:
                let at = Int(generator.next() % UInt64(body.count))
                body = Array(body[..<at]) + Array(repeating: UInt8(ascii: "["), count: 200) + Array(body[at...])
            }
            Self.ingest(path, body)
        }
    }
}
