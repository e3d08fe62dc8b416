import BanditoreChannels
import BanditoreCore
import Foundation
import Testing

@Suite("Bulletins: checking a draft and rendering it per channel")
struct BulletinRenderingTests {
    let topics: Set<String> = ["farmacie", "protezione-civile", "scuola", "scadenze", "eventi", "disservizi"]

    func invalid(_ draft: BulletinDraft) -> BulletinInvalid? {
        do {
            let content = try draft.validated(knownTopics: topics)
            try BulletinRendering.check(content)
            return nil
        } catch {
            return error
        }
    }

    @Test("a valid draft: trimmed, topics and channels deduplicated, every channel by default, normal by default")
    func valid() throws {
        let draft = BulletinDraft(
            title: "  Farmacia di turno ", body: ["it": "Oggi: via Roma 1.\n", "zh": "今天：罗马路1号。"],
            topics: ["farmacie", "farmacie"]
        )
        let content = try draft.validated(knownTopics: topics)
        #expect(content.title == "Farmacia di turno")
        #expect(content.body == [.italian: "Oggi: via Roma 1.", .chinese: "今天：罗马路1号。"])
        #expect(content.topics == ["farmacie"])
        #expect(content.channels == [.whatsapp, .telegram, .wechat])
        #expect(content.urgency == .normal)
        #expect(content.text(for: .english) == "Oggi: via Roma 1.")
        #expect(
            try BulletinDraft(title: "Allerta", body: ["it": "Vento forte"], topics: [], urgency: "urgent")
                .validated(knownTopics: topics).urgency == .urgent)
    }

    @Test("send_at: ISO 8601 with a time zone, fractions allowed; anything else is an error naming send_at")
    func sendAt() throws {
        func decode(_ sendAt: String) throws -> BulletinDraft {
            try JSONDecoder().decode(
                BulletinDraft.self,
                from: Data(#"{"title":"T","body":{"it":"x"},"topics":["scuola"],"send_at":"\#(sendAt)"}"#.utf8)
            )
        }
        #expect(try decode("2026-03-02T08:00:00+01:00").sendAt == Date(timeIntervalSince1970: 1_772_434_800))
        #expect(try decode("2026-03-02T07:00:00.500Z").sendAt == Date(timeIntervalSince1970: 1_772_434_800.5))
        for bad in ["domani", "2026-03-02", "2026-03-02T08:00:00", ""] {
            do {
                _ = try decode(bad)
                Issue.record("\(bad) accepted")
            } catch DecodingError.dataCorrupted(let context) {
                #expect(context.codingPath.map(\.stringValue) == ["send_at"], "\(bad)")
            }
        }
        // Encoded as it is read.
        let draft = BulletinDraft(
            title: "T", body: ["it": "x"], topics: [], sendAt: Date(timeIntervalSince1970: 1_772_434_800))
        let again = try JSONDecoder().decode(BulletinDraft.self, from: JSONEncoder().encode(draft))
        #expect(again == draft)
    }

    @Test("bad drafts name their field")
    func fields() {
        let base = BulletinDraft(title: "T", body: ["it": "Testo"], topics: ["scuola"])
        var draft = base
        draft.body = ["zh": "只有中文"]
        #expect(invalid(draft)?.field == "body.it")
        draft = base
        draft.body["fr"] = "Texte"
        #expect(invalid(draft)?.field == "body.fr")
        draft = base
        draft.title = "   "
        #expect(invalid(draft)?.field == "title")
        draft = base
        draft.topics = ["scuola", "mercato"]
        #expect(invalid(draft)?.field == "topics[1]")
        draft = base
        draft.topics = []
        #expect(invalid(draft)?.field == "topics")
        draft = base
        draft.channels = ["telegram", "sms"]
        #expect(invalid(draft)?.field == "channels[1]")
        draft = base
        draft.urgency = "soon"
        #expect(invalid(draft)?.field == "urgency")
        // Over a channel's limit: WeChat template fields hold 200 characters; WhatsApp's template body 1,024.
        draft = base
        draft.body["zh"] = String(repeating: "停", count: 201)
        #expect(
            invalid(draft)
                == BulletinInvalid("body.zh", "too long or malformed for wechat: 201 characters, at most 200"))
        draft.channels = ["telegram", "whatsapp"]
        #expect(invalid(draft) == nil)
        draft.body["it"] = String(repeating: "a", count: 1100)
        #expect(invalid(draft)?.field == "body.it")
        #expect(invalid(draft)?.message.contains("whatsapp") == true)
        draft.channels = ["telegram"]
        #expect(invalid(draft) == nil)
        draft.body["it"] = String(repeating: "a", count: 4001)
        #expect(invalid(draft)?.field == "body.it")
    }

    @Test("each channel's message: Telegram plain text, WhatsApp template parameters on one line, WeChat fields")
    func rendering() throws {
        let content = try BulletinDraft(
            title: "Scuole chiuse",
            body: ["it": "Domani scuole chiuse.\n\nAllerta    meteo\tarancione.", "zh": "明天学校停课。"],
            topics: ["scuola"]
        ).validated(knownTopics: topics)
        let telegram = BulletinRendering.messages(content, channel: .telegram)
        #expect(telegram[.italian]?.text == "Scuole chiuse\n\nDomani scuole chiuse.\n\nAllerta    meteo\tarancione.")
        #expect(telegram.keys.sorted { $0.rawValue < $1.rawValue } == [.italian, .chinese])
        let whatsapp = BulletinRendering.messages(content, channel: .whatsapp)
        #expect(
            whatsapp[.italian]?.parameters == ["Scuole chiuse", "Domani scuole chiuse. · Allerta meteo arancione."])
        #expect(whatsapp[.chinese]?.templateLanguage == "zh_CN")
        #expect(whatsapp[.italian]?.template == "banditore_bulletin")
        try WhatsApp.validateTemplateParameters(whatsapp[.italian]?.parameters ?? [])
        let wechat = BulletinRendering.messages(content, channel: .wechat)
        #expect(wechat[.chinese]?.fields == ["first": "Scuole chiuse", "keyword1": "明天学校停课。"])
    }
}
