import BanditoreChannels
import BanditoreCore
import Foundation
import Testing

@testable import BanditoreIngest

@Suite("Webhooks become citizens' commands; the admin API's tokens")
struct WebhookNormaliserTests {
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
        #expect(
            commands[2].report
                == .init(
                    providerMessageID: "wamid.OUT=", status: "failed", errorCode: 131026,
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
                xml(
                    "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_scuola]]></EventKey>"
                )
            )
        )
        #expect(follow.kind == .subscribe)
        #expect(follow.topic == "scuola")
        #expect(follow.dedupeKey == "oW7x0tExampleOpenId:1767261700:subscribe")
        let unfollow = WebhookNormaliser.wechat(
            try WeChat.decodeInbound(
                xml(
                    "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event><EventKey><![CDATA[]]></EventKey>"
                )
            )
        )
        #expect(unfollow.kind == .unsubscribe)
        #expect(unfollow.leaveReason == .unfollowed)
        let chinese = WebhookNormaliser.wechat(
            try WeChat.decodeInbound(
                xml(
                    "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[中文]]></Content><MsgId>24412345678901234</MsgId>"
                )
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
}
