import BanditoreCore
import Testing

@Suite("Telegram channel posts setting")
struct ChannelPostTests {
    @Test("entries with and without a topic, usernames and ids; which bulletins each takes")
    func parses() throws {
        let posts = try ChannelPost.parse(" scuola:it=@scuole_prato, scuola:ZH=@scuole_prato_zh ,en=-1001234567890,")
        #expect(
            posts == [
                ChannelPost(topic: "scuola", language: .italian, chat: "@scuole_prato"),
                ChannelPost(topic: "scuola", language: .chinese, chat: "@scuole_prato_zh"),
                ChannelPost(topic: nil, language: .english, chat: "-1001234567890"),
            ]
        )
        #expect(posts[0].matches(topics: ["eventi", "scuola"], urgent: false))
        #expect(!posts[0].matches(topics: ["farmacie"], urgent: false))
        #expect(posts[0].matches(topics: ["protezione-civile"], urgent: true))
        #expect(posts[2].matches(topics: ["farmacie"], urgent: false))
        #expect(try ChannelPost.parse("").isEmpty)
    }

    @Test("a wrong entry is refused, naming it and what is wrong")
    func refuses() {
        let cases: [(String, String)] = [
            ("it@scuole_prato", "expected [topic:]language=chat"),
            ("fr=@scuole_prato", "unknown language 'fr'"),
            ("it=scuole_prato", "neither a channel's @username nor a chat id"),
            ("it=@abc", "neither a channel's @username nor a chat id"),
            (":it=@scuole_prato", "the topic is empty"),
            ("it=@scuole_prato,zh=@scuole_prato,it=@scuole_prato", "named twice"),
        ]
        for (specification, message) in cases {
            #expect(throws: ChannelPost.Invalid.self, "\(specification)") { try ChannelPost.parse(specification) }
            do {
                _ = try ChannelPost.parse(specification)
            } catch {
                #expect(error.description.contains(message), "\(specification): \(error.description)")
            }
        }
    }
}
