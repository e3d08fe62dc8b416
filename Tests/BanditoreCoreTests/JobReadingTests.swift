import BanditoreCore
import Foundation
import Testing

@Suite("Delivery jobs read with our JSON reader")
struct JobReadingTests {
    static let jobs: [DeliveryJob] = [
        DeliveryJob(
            bulletinID: UUID(), channel: .wechat, urgent: true, attempt: 3,
            messages: [
                .italian: .wechatTemplate(
                    "banditore-bulletin", fields: ["first": "Allerta \"meteo\"", "keyword1": "a\nb"],
                    url: "https://comune.example/a?b=1&c"),
                .chinese: .wechatTemplate("banditore-bulletin", fields: ["first": "预警", "keyword1": "明天学校停课。"]),
            ],
            recipients: (0..<50).map {
                Recipient(
                    deliveryID: Int64($0) + 9_000_000_000_000, subscriberID: Int64($0), address: "oSim\\\($0)\u{1}",
                    language: $0 % 2 == 0 ? .italian : .chinese
                )
            },
            correlationID: "corr-1", lastError: "503: \"busy\"\tretry"
        ),
        DeliveryJob(
            channel: .whatsapp,
            messages: [
                .english: .whatsappTemplate("bulletin", language: "en", parameters: ["Pharmacy rota", "☀️ 24h"])
            ],
            recipients: [Recipient(deliveryID: 1, subscriberID: 2, address: "393331234567", language: .english)]
        ),
        DeliveryJob(
            id: "reply-1", channel: .telegram, messages: [.english: .text("Hello / ciao ☀️")],
            recipients: [Recipient(address: "-1001234567890")]
        ),
        DeliveryJob(channel: .whatsapp, messages: [:], recipients: []),
    ]

    @Test("reads what the composer writes and what JSONEncoder writes, as JSONDecoder does", arguments: jobs)
    func sameAsJSONDecoder(job: DeliveryJob) throws {
        #expect(try DeliveryJob(json: job.json()) == job)
        let encoded = Array(try JSONEncoder().encode(job))
        #expect(try DeliveryJob(json: encoded) == job)
        #expect(try DeliveryJob(json: encoded) == JSONDecoder().decode(DeliveryJob.self, from: Data(encoded)))
    }

    @Test("null optional fields and unknown fields are accepted, as JSONDecoder accepts them")
    func lenient() throws {
        let body = #"""
            {"id":"j1","bulletinID":null,"channel":"telegram","urgent":false,"attempt":0,"extra":{"a":[1,2]},
             "messages":{"it":{"kind":"text","text":"Ciao","template":null,"fields":null,"future":1}},
             "recipients":[{"address":"42","language":"it","deliveryID":null,"subscriberID":7,"note":"x"}],
             "correlationID":null}
            """#
        let ours = try DeliveryJob(json: Array(body.utf8))
        #expect(ours == (try JSONDecoder().decode(DeliveryJob.self, from: Data(body.utf8))))
        #expect(ours.recipients == [Recipient(subscriberID: 7, address: "42", language: .italian)])
        #expect(ours.messages == [.italian: .text("Ciao")])
    }

    @Test(
        "what JSONDecoder refuses, we refuse (the job goes to the dead-letter queue)",
        arguments: [
            "", "[]", "{", #"{"id":"j"}"#,
            #"{"id":"j","channel":"telegram","urgent":false,"attempt":0,"messages":{},"recipients":[]} x"#,
            #"{"id":"j","channel":"fax","urgent":false,"attempt":0,"messages":{},"recipients":[]}"#,
            #"{"id":"j","channel":"telegram","urgent":"no","attempt":0,"messages":{},"recipients":[]}"#,
            #"{"id":"j","channel":"telegram","urgent":false,"attempt":1.5,"messages":{},"recipients":[]}"#,
            #"{"id":"j","channel":"telegram","urgent":false,"attempt":0,"messages":{"xx":{"kind":"text"}},"recipients":[]}"#,
            #"{"id":"j","channel":"telegram","urgent":false,"attempt":0,"messages":{"it":{"kind":"fax"}},"recipients":[]}"#,
            #"{"id":"j","channel":"telegram","urgent":false,"attempt":0,"messages":{"it":{"kind":"template","parameters":[1]}},"recipients":[]}"#,
            #"{"id":"j","channel":"telegram","urgent":false,"attempt":0,"messages":{},"recipients":[{"language":"it"}]}"#,
            #"{"id":"j","channel":"telegram","urgent":false,"attempt":0,"messages":{},"recipients":[{"address":"1","language":"it","deliveryID":"7"}]}"#,
            #"{"id":"j","bulletinID":"not-a-uuid","channel":"telegram","urgent":false,"attempt":0,"messages":{},"recipients":[]}"#,
            #"{"id":"j","channel":"telegram","urgent":false,"attempt":0,"messages":{},"recipients":{}}"#,
        ]
    )
    func refused(body: String) {
        #expect(throws: (any Error).self) { try JSONDecoder().decode(DeliveryJob.self, from: Data(body.utf8)) }
        #expect(throws: JSONReadingError.self) { try DeliveryJob(json: Array(body.utf8)) }
    }
}
