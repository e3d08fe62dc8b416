import Foundation
import Testing

@testable import BanditoreCore

@Suite("Citizens' commands")
struct CommandParsingTests {
    @Test(
        "text commands forgive case, accents, extra spaces and punctuation",
        arguments: [
            ("ATTIVA ISCRIZIONE", CitizenCommand.Kind.subscribe, nil as String?),
            ("attiva  iscrizione", .subscribe, nil),
            ("  Attiva   Iscrizione! ", .subscribe, nil),
            ("attiva iscrizione ! .", .subscribe, nil),
            ("\tSegui\n scuola !", .follow, "scuola"),
            ("DISATTIVA ISCRIZIONE", .unsubscribe, nil),
            ("Disattiva Iscrizione", .unsubscribe, nil),
            ("disattivà iscrizióne.", .unsubscribe, nil),
            ("/start", .subscribe, nil),
            ("/start scuola", .subscribe, "scuola"),
            ("/stop@ComuneDiPratoBot", .unsubscribe, nil),
            ("segui Protezione Civile", .follow, "protezione civile"),
            ("/segui@ComuneBot farmacie", .follow, "farmacie"),
            ("NON SEGUIRE eventi", .unfollow, "eventi"),
            ("/nonseguire eventi", .unfollow, "eventi"),
            ("unfollow scadenze", .unfollow, "scadenze"),
            ("关注学校", .follow, "学校"),
            ("取消关注 scuola", .unfollow, "scuola"),
            ("Argomenti", .listTopics, nil),
            ("主题", .listTopics, nil),
            ("stato", .status, nil),
            ("AIUTO", .help, nil),
            ("?", .help, nil),
            ("buongiorno, a che ora apre l'anagrafe?", .unknown, nil),
            ("segui", .unknown, nil),
            ("seguimi", .unknown, nil),
        ]
    )
    func parses(text: String, kind: CitizenCommand.Kind, topic: String?) {
        let parsed = CommandParser.parse(text)
        #expect(parsed.kind == kind, "\(text)")
        #expect(parsed.topic == topic, "\(text)")
    }

    @Test(
        "language commands in three languages; Chinese text reports Chinese",
        arguments: [
            ("中文", Language.chinese), ("lingua cinese", .chinese), ("/lingua zh", .chinese), ("Italiano", .italian),
            ("LINGUA INGLESE", .english), ("english", .english), ("language English", .english), ("语言 英语", .english),
        ]
    )
    func languages(text: String, language: Language) {
        let parsed = CommandParser.parse(text)
        #expect(parsed.kind == .setLanguage)
        #expect(parsed.language == language)
    }

    @Test("ASCII text takes a short cut that folds it exactly as Foundation's case, accent and width folding does")
    func asciiFolding() {
        let every = String(decoding: (1..<0x80).map { UInt8($0) }, as: UTF8.self)
        let samples = [every, "ATTIVA ISCRIZIONE", "  Segui   Protezione-Civile! ", "/stop@ComuneBot", "^`~'\"", ""]
        for text in samples {
            let slow = text.folding(options: [.caseInsensitive, .diacriticInsensitive, .widthInsensitive], locale: nil)
                .lowercased()
            #expect(CommandParser.asciiLowercased(text) == slow, "\(text.debugDescription)")
        }
        for text in ["disattivà", "ＡＴＴＩＶＡ", "订阅", "caf\u{E9}"] {
            #expect(CommandParser.asciiLowercased(text) == nil, "\(text)")
        }
        #expect(CommandParser.normalise("ＡＴＴＩＶＡ  Iscrizióne!") == "attiva iscrizione")
    }

    @Test("a command written in Chinese reports Chinese; Latin text reports nothing")
    func writtenIn() {
        #expect(CommandParser.parse("订阅").writtenIn == .chinese)
        #expect(CommandParser.parse("订阅").kind == .subscribe)
        #expect(CommandParser.parse("你好").kind == .unknown)
        #expect(CommandParser.parse("你好").writtenIn == .chinese)
        #expect(CommandParser.parse("ATTIVA ISCRIZIONE").writtenIn == nil)
        #expect(CommandParser.parse("lingua klingon").kind == .setLanguage)
        #expect(CommandParser.parse("lingua klingon").language == nil)
    }

    @Test("a command in English words reports English; Italian ones and Telegram's /start and /stop report nothing")
    func writtenInEnglish() {
        for text in [
            "subscribe", "Subscribe!", "UNSUBSCRIBE", "help", "topics", "status", "follow scuola", "unfollow scuola",
        ] {
            #expect(CommandParser.parse(text).writtenIn == .english, "\(text)")
        }
        #expect(CommandParser.parse("follow scuola").topic == "scuola")
        for text in [
            "ATTIVA ISCRIZIONE", "disattiva", "aiuto", "segui scuola", "/start", "/stop", "start", "info", "?",
        ] {
            #expect(CommandParser.parse(text).writtenIn == nil, "\(text)")
        }
        #expect(CommandParser.parse("订阅").writtenIn == .chinese)
    }

    @Test("topics match by slug, spaced slug or the start of a name in any language")
    func topicMatching() {
        let school = TopicInfo(
            slug: "scuola", names: [.italian: "Scuola: nidi, mensa", .chinese: "学校：托儿所", .english: "School: nurseries"]
        )
        let civil = TopicInfo(slug: "protezione-civile", names: [.italian: "Protezione civile e allerte meteo"])
        #expect(school.matches("scuola"))
        #expect(school.matches("SCUOLA"))
        #expect(school.matches("学校"))
        #expect(school.matches("school"))
        #expect(!school.matches("s"))
        #expect(!school.matches("farmacie"))
        #expect(civil.matches("protezione civile"))
        #expect(civil.matches("Protezione-Civile"))
        #expect(civil.matches("protezione_civile"))
    }

    @Test("provider language codes map to the languages we serve")
    func providerLanguages() {
        #expect(Language(providerCode: "zh-hans") == .chinese)
        #expect(Language(providerCode: "en-GB") == .english)
        #expect(Language(providerCode: "it") == .italian)
        #expect(Language(providerCode: "de") == nil)
        #expect(Language(providerCode: nil) == nil)
    }
}
