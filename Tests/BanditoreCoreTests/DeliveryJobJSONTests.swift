import BanditoreCore
import Foundation
import Testing

@Suite("Delivery jobs written as JSON by hand")
struct DeliveryJobJSONTests {
    static let jobs: [DeliveryJob] = [
        DeliveryJob(
            bulletinID: UUID(), channel: .wechat, urgent: true, attempt: 3,
            messages: [
                .italian: .wechatTemplate(
                    "banditore-bulletin", fields: ["first": "Allerta \"meteo\"", "keyword1": "a\nb"]),
                .chinese: .wechatTemplate("banditore-bulletin", fields: ["first": "预警", "keyword1": "明天学校停课。"]),
            ],
            recipients: (0..<50).map {
                Recipient(
                    deliveryID: Int64($0) + 1_000_000_000, subscriberID: Int64($0), address: "oSim\\\($0)\u{1}",
                    language: $0 % 2 == 0 ? .italian : .chinese
                )
            },
            correlationID: "corr-1", lastError: "503: \"busy\"\tretry"
        ),
        DeliveryJob(
            id: "reply-1", channel: .telegram, messages: [.english: .text("Hello / ciao ☀️")],
            recipients: [Recipient(address: "12345")]
        ),
        DeliveryJob(channel: .whatsapp, messages: [:], recipients: []),
    ]

    @Test("JSONDecoder reads back the same job", arguments: jobs)
    func roundTrip(job: DeliveryJob) throws {
        #expect(try JSONDecoder().decode(DeliveryJob.self, from: Data(job.json())) == job)
    }

    @Test("the same document as JSONEncoder's", arguments: jobs)
    func sameDocument(job: DeliveryJob) throws {
        let ours = try JSONSerialization.jsonObject(with: Data(job.json())) as? NSDictionary
        let encoder = try JSONSerialization.jsonObject(with: JSONEncoder().encode(job)) as? NSDictionary
        #expect(ours != nil)
        #expect(ours == encoder)
    }
}
