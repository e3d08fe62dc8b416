import BanditoreChannels
import Foundation
import Testing

@testable import BanditoreCore
@testable import BanditoreIngest

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
        for text in ["subscribe", "Subscribe!", "UNSUBSCRIBE", "help", "topics", "status", "follow scuola", "unfollow scuola"] {
            #expect(CommandParser.parse(text).writtenIn == .english, "\(text)")
        }
        #expect(CommandParser.parse("follow scuola").topic == "scuola")
        for text in ["ATTIVA ISCRIZIONE", "disattiva", "aiuto", "segui scuola", "/start", "/stop", "start", "info", "?"] {
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

    @Test("WhatsApp: text becomes a command keyed by wamid, a status a delivery report, a photo the help")
    func whatsappEvents() throws {
        let body = Array(
            """
            {"object":"whatsapp_business_account","entry":[{"id":"1022901","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"390610000000","phone_number_id":"1065403"},"contacts":[{"profile":{"name":"Maria"},"wa_id":"393470000001"}],"messages":[{"from":"393470000001","id":"wamid.A=","timestamp":"1767261600","type":"text","text":{"body":"ATTIVA ISCRIZIONE"}},{"from":"393470000002","id":"wamid.B=","timestamp":"1767261600","type":"image","image":{"id":"1"}}],"statuses":[{"id":"wamid.OUT=","status":"failed","timestamp":"1767261660","recipient_id":"393470000003","errors":[{"code":131026,"title":"Message undeliverable"}]}]}}]}]}
            """.utf8
        )
        let commands = WebhookNormaliser.whatsapp(try WhatsApp.decodeWebhook(body))
        #expect(commands.count == 3)
        #expect(commands[0].kind == .subscribe)
        #expect(commands[0].address == "393470000001")
        #expect(commands[0].dedupeKey == "wamid.A=")
        #expect(commands[1].kind == .unknown)
        #expect(commands[2].kind == .deliveryStatus)
        #expect(commands[2].address == "393470000003")
        #expect(commands[2].report == .init(providerMessageID: "wamid.OUT=", status: "failed", errorCode: 131026,
                                             errorTitle: "Message undeliverable"))
        #expect(commands[2].dedupeKey == nil)
    }

    @Test("Telegram: /start with a topic and a language code; blocking the bot unsubscribes; unblocking is ignored")
    func telegramUpdates() throws {
        let start = Array(
            """
            {"update_id":900000001,"message":{"message_id":17,"from":{"id":123456789,"is_bot":false,"first_name":"Maria","language_code":"zh-hans"},"chat":{"id":123456789,"first_name":"Maria","type":"private"},"date":1767261600,"text":"/start scuola","entities":[{"offset":0,"length":6,"type":"bot_command"}]}}
            """.utf8
        )
        let command = try #require(WebhookNormaliser.telegram(try Telegram.decodeUpdate(start)))
        #expect(command.kind == .subscribe)
        #expect(command.topic == "scuola")
        #expect(command.reportedLanguage == .chinese)
        #expect(command.address == "123456789")
        #expect(command.dedupeKey == "900000001")
        func membership(_ status: String) -> [UInt8] {
            Array(
                """
                {"update_id":900000002,"my_chat_member":{"chat":{"id":123456789,"type":"private"},"from":{"id":123456789,"is_bot":false,"first_name":"Maria"},"date":1767265200,"old_chat_member":{"user":{"id":7770001,"is_bot":true,"first_name":"Comune"},"status":"member"},"new_chat_member":{"user":{"id":7770001,"is_bot":true,"first_name":"Comune"},"status":"\(status)"}}}
                """.utf8
            )
        }
        let blocked = try #require(WebhookNormaliser.telegram(try Telegram.decodeUpdate(membership("kicked"))))
        #expect(blocked.kind == .unsubscribe)
        #expect(blocked.leaveReason == .blocked)
        let unblocked = try #require(WebhookNormaliser.telegram(try Telegram.decodeUpdate(membership("member"))))
        #expect(unblocked.kind == .ignored)
    }

    @Test("WeChat: follow (with a QR scene topic) subscribes, unfollow unsubscribes, Chinese text sets Chinese")
    func wechatPushes() throws {
        func xml(_ inner: String) -> [UInt8] {
            Array(
                "<xml><ToUserName><![CDATA[gh_1a2b3c4d5e6f]]></ToUserName><FromUserName><![CDATA[oW7x0tExampleOpenId]]></FromUserName><CreateTime>1767261700</CreateTime>\(inner)</xml>"
                    .utf8
            )
        }
        let follow = WebhookNormaliser.wechat(
            try WeChat.decodeInbound(
                xml("<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_scuola]]></EventKey>")
            )
        )
        #expect(follow.kind == .subscribe)
        #expect(follow.topic == "scuola")
        #expect(follow.dedupeKey == "oW7x0tExampleOpenId:1767261700:subscribe")
        let unfollow = WebhookNormaliser.wechat(
            try WeChat.decodeInbound(
                xml("<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event><EventKey><![CDATA[]]></EventKey>")
            )
        )
        #expect(unfollow.kind == .unsubscribe)
        #expect(unfollow.leaveReason == .unfollowed)
        let chinese = WebhookNormaliser.wechat(
            try WeChat.decodeInbound(
                xml("<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[中文]]></Content><MsgId>24412345678901234</MsgId>")
            )
        )
        #expect(chinese.kind == .setLanguage)
        #expect(chinese.language == .chinese)
        #expect(chinese.writtenIn == .chinese)
        #expect(chinese.dedupeKey == "24412345678901234")
    }

    @Test("admin tokens: any configured token, Bearer scheme, nothing else")
    func adminTokens() {
        let tokens = AdminTokens(["first-token", "second-token"])
        #expect(tokens.authorizes("Bearer first-token"))
        #expect(tokens.authorizes("bearer second-token"))
        #expect(!tokens.authorizes("Bearer first-toke"))
        #expect(!tokens.authorizes("first-token"))
        #expect(!tokens.authorizes(nil))
        #expect(!AdminTokens([]).authorizes("Bearer "))
    }

    @Test("every reply fits the channels' text limits in every language")
    func repliesFit() {
        let topics = (0..<6).map {
            TopicInfo(slug: "topic-\($0)", names: [.italian: String(repeating: "Nome ", count: 12), .chinese: "主题名称"])
        }
        let replies: [Reply] = [
            .subscribed(topics: topics), .welcomeBack(topics: topics), .topicList(all: topics, followed: ["topic-1"]),
            .unknownTopic("x", all: topics), .help, .notUnderstood, .status(active: true, topics: topics),
        ]
        for reply in replies {
            for language in Language.allCases {
                for channel in Channel.allCases {
                    let text = ReplyText.render(reply, language: language, channel: channel)
                    #expect(!text.isEmpty)
                    #expect(text.utf8.count <= WeChat.maxCustomTextBytes, "\(reply) \(language) \(channel)")
                }
            }
        }
        #expect(ReplyText.render(.languageSet, language: .chinese, channel: .wechat) == "已切换为中文。")
    }
}
