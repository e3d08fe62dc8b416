import BanditoreChannels
import BanditoreCore
import Foundation
import Testing

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
private func json(_ request: ProviderRequest) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(request.body ?? [])) as? [String: Any])
}

@Suite("WhatsApp codec")
struct WhatsAppCodecTests {
    @Test("signature: the known vector verifies; a tampered body, a wrong secret or a missing header does not")
    func signature() {
        let body = bytes(#"{"object":"whatsapp_business_account"}"#)
        let header = "sha256=f6491327cb5b041cdf4fe69b94711c7b68bb0aef719854bae676a59788a2b6b6"
        #expect(WhatsApp.signature(body: body, appSecret: "appsecret") == header)
        #expect(WhatsApp.verifySignature(header: header, body: body, appSecret: "appsecret"))
        #expect(
            !WhatsApp.verifySignature(
                header: header, body: bytes(#"{"object":"whatsapp_business_accounT"}"#), appSecret: "appsecret"))
        #expect(!WhatsApp.verifySignature(header: header, body: body, appSecret: "other"))
        #expect(!WhatsApp.verifySignature(header: nil, body: body, appSecret: "appsecret"))
        #expect(!WhatsApp.verifySignature(header: String(header.dropLast()), body: body, appSecret: "appsecret"))
    }

    @Test("verification handshake answers the challenge only for the configured token")
    func handshake() {
        let query = ["hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "1158201444"]
        #expect(WhatsApp.verificationChallenge(query: query, verifyToken: "tok") == "1158201444")
        #expect(WhatsApp.verificationChallenge(query: query, verifyToken: "other") == nil)
        #expect(WhatsApp.verificationChallenge(query: ["hub.mode": "x"], verifyToken: "tok") == nil)
    }

    @Test("text and template requests have the Cloud API shape; limits are enforced with the field named")
    func requests() throws {
        let text = try WhatsApp.textMessage(
            apiVersion: "v21.0", phoneNumberID: "1065403", token: "T", to: "393470000001", body: "Iscrizione attivata."
        )
        #expect(text.path == "/v21.0/1065403/messages")
        #expect(text.headers["Authorization"] == "Bearer T")
        let t = try json(text)
        #expect(t["messaging_product"] as? String == "whatsapp")
        #expect(t["type"] as? String == "text")
        #expect((t["text"] as? [String: Any])?["body"] as? String == "Iscrizione attivata.")

        let template = try WhatsApp.templateMessage(
            apiVersion: "v21.0", phoneNumberID: "1065403", token: "T", to: "393470000001", template: "bollettino",
            language: "it", parameters: ["Farmacie di turno", "Farmacia Centrale, via Roma 1"]
        )
        let tp = try #require(try json(template)["template"] as? [String: Any])
        #expect(tp["name"] as? String == "bollettino")
        #expect((tp["language"] as? [String: Any])?["code"] as? String == "it")
        let parameters = ((tp["components"] as? [[String: Any]])?.first?["parameters"] as? [[String: Any]]) ?? []
        #expect(parameters.map { $0["text"] as? String } == ["Farmacie di turno", "Farmacia Centrale, via Roma 1"])

        #expect(
            throws: ChannelLimitError(channel: "whatsapp", field: "text.body", message: "4097 characters, at most 4096")
        ) {
            try WhatsApp.textMessage(
                apiVersion: "v21.0", phoneNumberID: "1", token: "T", to: "1", body: String(repeating: "a", count: 4097))
        }
        #expect(throws: ChannelLimitError.self) { try WhatsApp.validateTemplateParameters(["riga\nseconda"]) }
        #expect(throws: ChannelLimitError.self) { try WhatsApp.validateTemplateParameters(["a     b"]) }
        #expect(throws: ChannelLimitError.self) {
            try WhatsApp.validateTemplateParameters([String(repeating: "x", count: 1025)])
        }
    }

    @Test("responses: the sample 200 gives the wamid; errors are classified by code")
    func responses() throws {
        let ok =
            #"{"messaging_product":"whatsapp","contacts":[{"input":"393470000001","wa_id":"393470000001"}],"messages":[{"id":"wamid.HBgMOTMxQUE="}]}"#
        #expect(try WhatsApp.decodeSendResponse(status: 200, body: bytes(ok)).get() == "wamid.HBgMOTMxQUE=")
        let pair =
            #"{"error":{"message":"(#131056) (Business Account, Consumer Account) pair rate limit hit","type":"OAuthException","code":131056,"error_data":{"messaging_product":"whatsapp","details":"Too many messages to this user."},"fbtrace_id":"AbC123"}}"#
        guard case .failure(.rateLimited(let retry, _)) = WhatsApp.decodeSendResponse(status: 400, body: bytes(pair))
        else {
            Issue.record("131056 should be rate limited")
            return
        }
        #expect(retry == .seconds(6))
        func kind(_ code: Int, _ status: Int = 400) -> String? {
            let body = #"{"error":{"message":"m","type":"OAuthException","code":\#(code)}}"#
            if case .failure(let f) = WhatsApp.decodeSendResponse(status: status, body: bytes(body)) { return f.kind }
            return nil
        }
        #expect(kind(130429) == "rate_limited")
        #expect(kind(190, 401) == "auth")
        #expect(kind(131000, 500) == "transient")
        #expect(kind(131016, 503) == "transient")
        #expect(kind(131026) == "permanent")
        #expect(kind(131047) == "permanent")
        #expect(kind(132000) == "permanent")
        if case .failure(let f) = WhatsApp.decodeSendResponse(status: 502, body: bytes("<html>bad gateway</html>")) {
            #expect(f.kind == "transient")
        } else {
            Issue.record("502 without a body should fail")
        }
    }

    @Test("webhooks: the sample inbound message and failed status decode; malformed bodies are refused")
    func webhooks() throws {
        let inbound =
            #"{"object":"whatsapp_business_account","entry":[{"id":"1022901","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"390610000000","phone_number_id":"1065403"},"contacts":[{"profile":{"name":"Maria"},"wa_id":"393470000001"}],"messages":[{"from":"393470000001","id":"wamid.HBgMOTMxQkI=","timestamp":"1767261600","type":"text","text":{"body":"ATTIVA ISCRIZIONE"}}]}}]}]}"#
        let events = try WhatsApp.decodeWebhook(bytes(inbound))
        guard case .message(let m) = try #require(events.first) else {
            Issue.record("no message")
            return
        }
        #expect(m.from == "393470000001" && m.id == "wamid.HBgMOTMxQkI=" && m.text == "ATTIVA ISCRIZIONE")
        #expect(m.profileName == "Maria" && m.timestamp == Date(timeIntervalSince1970: 1_767_261_600))

        let failed =
            #"{"object":"whatsapp_business_account","entry":[{"id":"1022901","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"390610000000","phone_number_id":"1065403"},"statuses":[{"id":"wamid.HBgMOTMxQUE=","status":"failed","timestamp":"1767261660","recipient_id":"393470000001","errors":[{"code":131047,"title":"Re-engagement message","message":"Re-engagement message","error_data":{"details":"Window closed."}}]}]}}]}]}"#
        guard case .status(let s) = try #require(try WhatsApp.decodeWebhook(bytes(failed)).first) else {
            Issue.record("no status")
            return
        }
        #expect(s.messageID == "wamid.HBgMOTMxQUE=" && s.status == "failed" && s.errorCode == 131047)

        #expect(throws: WebhookDecodingError.self) { try WhatsApp.decodeWebhook(bytes("{not json")) }
        #expect(throws: WebhookDecodingError.self) {
            try WhatsApp.decodeWebhook(bytes(#"{"object":"page","entry":[]}"#))
        }
        #expect(throws: WebhookDecodingError.self) { try WhatsApp.decodeWebhook(bytes(String(inbound.prefix(80)))) }
    }
}

@Suite("Telegram codec")
struct TelegramCodecTests {
    @Test("sendMessage to a chat and to a channel; the text limit is enforced")
    func requests() throws {
        let request = try Telegram.sendMessage(token: "123:ABC", chat: .id(123_456_789), text: "Iscrizione attivata.")
        #expect(request.path == "/bot123:ABC/sendMessage")
        let body = try json(request)
        #expect((body["chat_id"] as? NSNumber)?.int64Value == 123_456_789)
        #expect(body["text"] as? String == "Iscrizione attivata.")
        #expect((body["link_preview_options"] as? [String: Any])?["is_disabled"] as? Bool == true)
        let big = try Telegram.sendMessage(token: "t", chat: .id(-1_001_234_567_890_123), text: "x")
        #expect((try json(big)["chat_id"] as? NSNumber)?.int64Value == -1_001_234_567_890_123)
        #expect(
            try json(Telegram.sendMessage(token: "t", chat: .username("scuolaprato"), text: "x"))["chat_id"] as? String
                == "@scuolaprato")
        #expect(throws: ChannelLimitError.self) {
            try Telegram.sendMessage(token: "t", chat: .id(1), text: String(repeating: "a", count: 4097))
        }
        #expect(
            Telegram.escapeMarkdownV2("Sciopero (27/11). Info: comune.prato.it!")
                == #"Sciopero \(27/11\)\. Info: comune\.prato\.it\!"#)
    }

    @Test("responses: the sample 200 and 429 with retry_after; blocked is permanent; 5xx transient")
    func responses() throws {
        let ok =
            #"{"ok":true,"result":{"message_id":42,"from":{"id":7770001,"is_bot":true,"first_name":"Comune"},"chat":{"id":123456789,"first_name":"Maria","type":"private"},"date":1767261600,"text":"Iscrizione attivata."}}"#
        #expect(try Telegram.decodeSendResponse(status: 200, body: bytes(ok)).get() == 42)
        let limited =
            #"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#
        #expect(
            Telegram.decodeSendResponse(status: 429, body: bytes(limited))
                == .failure(.channelThrottled(retryAfter: .seconds(7), reason: "Too Many Requests: retry after 7")))
        let blocked = #"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#
        #expect(
            Telegram.decodeSendResponse(status: 403, body: bytes(blocked))
                == .failure(.permanent(code: "403", reason: "Forbidden: bot was blocked by the user")))
        let bad = #"{"ok":false,"error_code":401,"description":"Unauthorized"}"#
        #expect(Telegram.decodeSendResponse(status: 401, body: bytes(bad)) == .failure(.auth(reason: "Unauthorized")))
        if case .failure(let f) = Telegram.decodeSendResponse(status: 502, body: bytes("Bad Gateway")) {
            #expect(f.kind == "transient")
        } else {
            Issue.record("502 should fail")
        }
    }

    @Test("updates: /start with a deep-link argument, my_chat_member kicked; the secret header is checked")
    func updates() throws {
        let start =
            #"{"update_id":900000001,"message":{"message_id":17,"from":{"id":123456789,"is_bot":false,"first_name":"Maria","language_code":"it"},"chat":{"id":123456789,"first_name":"Maria","type":"private"},"date":1767261600,"text":"/start","entities":[{"offset":0,"length":6,"type":"bot_command"}]}}"#
        guard
            case .message(let id, let chat, _, let language, _, let command, let argument, _) =
                try Telegram.decodeUpdate(bytes(start))
        else {
            Issue.record("not a message")
            return
        }
        #expect(id == 900_000_001 && chat == 123_456_789 && language == "it" && command == "/start" && argument == nil)
        let deep =
            #"{"update_id":5,"message":{"message_id":1,"from":{"id":9},"chat":{"id":9,"type":"private"},"date":1,"text":"/start@ComuneBot scuola","entities":[{"offset":0,"length":16,"type":"bot_command"}]}}"#
        guard case .message(_, _, _, _, _, let c2, let a2, _) = try Telegram.decodeUpdate(bytes(deep)) else {
            Issue.record("not a message")
            return
        }
        #expect(c2 == "/start" && a2 == "scuola")
        let kicked =
            #"{"update_id":900000002,"my_chat_member":{"chat":{"id":123456789,"first_name":"Maria","type":"private"},"from":{"id":123456789,"is_bot":false,"first_name":"Maria"},"date":1767265200,"old_chat_member":{"user":{"id":7770001,"is_bot":true,"first_name":"Comune"},"status":"member"},"new_chat_member":{"user":{"id":7770001,"is_bot":true,"first_name":"Comune"},"status":"kicked"}}}"#
        #expect(
            try Telegram.decodeUpdate(bytes(kicked))
                == .membership(updateID: 900_000_002, chatID: 123_456_789, status: "kicked"))
        #expect(throws: WebhookDecodingError.self) { try Telegram.decodeUpdate(bytes(#"{"message":{}}"#)) }
        #expect(throws: WebhookDecodingError.self) { try Telegram.decodeUpdate(bytes("[1,2")) }
        #expect(throws: WebhookDecodingError.self) { try Telegram.decodeUpdate(bytes(#"{"update_id":"5"}"#)) }
        #expect(throws: WebhookDecodingError.self) { try Telegram.decodeUpdate(bytes(#"{"update_id":5}x"#)) }
        // Entity offsets count UTF-16 units; escapes are decoded; a length out of range reads no command.
        let emoji =
            #"{"update_id":6,"message":{"message_id":2,"chat":{"id":-100,"type":"group"},"date":1,"text":"/segui\u00e8 \ud83c\udfeb scuola","entities":[{"offset":0,"length":7,"type":"bot_command"}]}}"#
        guard
            case .message(_, let c3, let user, _, let text, let command3, let argument3, _) = try Telegram.decodeUpdate(
                bytes(emoji))
        else {
            Issue.record("not a message")
            return
        }
        #expect(
            c3 == -100 && user == -100 && text == "/seguiè 🏫 scuola" && command3 == "/seguiè" && argument3 == "🏫 scuola"
        )
        for length in ["-1", "99"] {
            let odd =
                #"{"update_id":7,"message":{"message_id":3,"chat":{"id":1},"text":"/stop","entities":[{"offset":0,"length":\#(length),"type":"bot_command"}]}}"#
            guard case .message(_, _, _, _, _, let command, let argument, _) = try Telegram.decodeUpdate(bytes(odd))
            else {
                Issue.record("not a message")
                return
            }
            #expect(command == (length == "99" ? "/stop" : nil) && argument == nil)
        }
        #expect(Telegram.verifySecret(header: "s3cret_-A", secret: "s3cret_-A"))
        #expect(!Telegram.verifySecret(header: nil, secret: "s3cret_-A"))
        #expect(!Telegram.verifySecret(header: "s3cret_-B", secret: "s3cret_-A"))
    }
}

@Suite("WeChat codec")
struct WeChatCodecTests {
    @Test("signature: the known vector; echostr only for a valid signature; a tampered query fails")
    func signature() {
        #expect(
            WeChat.signature(token: "AAAAA", timestamp: "1714036504", nonce: "1514711492")
                == "f464b24fc39322e44b38aa78f5edd27bd1441696")
        let query = [
            "signature": "f464b24fc39322e44b38aa78f5edd27bd1441696", "timestamp": "1714036504", "nonce": "1514711492",
            "echostr": "hello",
        ]
        #expect(WeChat.echo(query: query, token: "AAAAA") == "hello")
        var tampered = query
        tampered["timestamp"] = "1714036505"
        #expect(WeChat.echo(query: tampered, token: "AAAAA") == nil)
        #expect(!WeChat.verifySignature(query: ["timestamp": "1", "nonce": "2"], token: "AAAAA"))
    }

    @Test("tokens, custom and template sends have the Official Account shape; errcode is classified")
    func sends() throws {
        #expect(
            WeChat.tokenRequest(appID: "wx1", secret: "s").path
                == "/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=s")
        // Query values: RFC 3986's unreserved ASCII stays, every other UTF-8 byte is escaped (non-ASCII letters too).
        #expect(
            WeChat.tokenRequest(appID: "wx1", secret: "a+b/c=d&e é~_.-Z9").path
                == "/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=a%2Bb%2Fc%3Dd%26e%20%C3%A9~_.-Z9"
        )
        #expect(
            try WeChat.customText(accessToken: "81_a-b%c", openID: "o", content: "x").path
                == "/cgi-bin/message/custom/send?access_token=81_a-b%25c"
        )
        let token = try WeChat.decodeToken(body: bytes(#"{"access_token":"81_Tk3xExample","expires_in":7200}"#)).get()
        #expect(token.token == "81_Tk3xExample" && token.expiresIn == .seconds(7200))
        let custom = try WeChat.customText(
            accessToken: "TOK", openID: "oW7x0tExampleOpenId", content: "Iscrizione attivata.")
        #expect(custom.path == "/cgi-bin/message/custom/send?access_token=TOK")
        #expect(try json(custom)["msgtype"] as? String == "text")
        let template = try WeChat.template(
            accessToken: "TOK", openID: "oW7x0tExampleOpenId", templateID: "Xk3vExampleTpl",
            data: ["thing1": "Allerta meteo"])
        #expect(
            ((try json(template)["data"] as? [String: Any])?["thing1"] as? [String: Any])?["value"] as? String
                == "Allerta meteo")
        #expect(throws: ChannelLimitError.self) {
            try WeChat.customText(accessToken: "t", openID: "o", content: String(repeating: "中", count: 700))
        }

        #expect(
            try WeChat.decodeSendResponse(status: 200, body: bytes(#"{"errcode":0,"errmsg":"ok","msgid":2817740683}"#))
                .get() == 2_817_740_683)
        func kind(_ code: Int) -> String? {
            if case .failure(let f) = WeChat.decodeSendResponse(
                status: 200, body: bytes(#"{"errcode":\#(code),"errmsg":"e"}"#))
            {
                return f.kind
            }
            return nil
        }
        #expect(kind(-1) == "transient")
        #expect(kind(42001) == "auth" && kind(40001) == "auth")
        #expect(kind(45009) == "rate_limited")
        #expect(kind(43004) == "permanent" && kind(45015) == "permanent" && kind(40003) == "permanent")
    }

    @Test(
        "inbound: the sample text and follow event decode; malformed or truncated XML and entity declarations are refused; passive reply swaps users"
    )
    func inbound() throws {
        let text =
            "<xml><ToUserName><![CDATA[gh_1a2b3c4d5e6f]]></ToUserName><FromUserName><![CDATA[oW7x0tExampleOpenId]]></FromUserName><CreateTime>1767261600</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[中文]]></Content><MsgId>24412345678901234</MsgId></xml>"
        let message = try WeChat.decodeInbound(bytes(text))
        #expect(
            message.fromUser == "oW7x0tExampleOpenId" && message.content == "中文"
                && message.messageID == "24412345678901234")
        #expect(message.dedupeKey == "24412345678901234")
        let follow =
            "<xml><ToUserName><![CDATA[gh_1a2b3c4d5e6f]]></ToUserName><FromUserName><![CDATA[oW7x0tExampleOpenId]]></FromUserName><CreateTime>1767261700</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[]]></EventKey></xml>"
        let event = try WeChat.decodeInbound(bytes(follow))
        #expect(event.messageType == "event" && event.event == "subscribe" && event.createTime == 1_767_261_700)
        #expect(event.dedupeKey == "oW7x0tExampleOpenId:1767261700:subscribe")
        #expect(throws: WebhookDecodingError.self) {
            try WeChat.decodeInbound(bytes("<xml><ToUserName>a</ToUserName>"))
        }
        #expect(throws: WebhookDecodingError.self) { try WeChat.decodeInbound(bytes(#"{"json":true}"#)) }
        #expect(throws: WebhookDecodingError.self) {
            try WeChat.decodeInbound(bytes("<xml><MsgType>text</MsgType></xml>"))
        }
        // A body cut off anywhere is refused, even where every field has arrived.
        for cut in [follow.count - 1, follow.count - 6, follow.count - 20, follow.count / 2] {
            #expect(throws: WebhookDecodingError.self, "cut at \(cut)") {
                try WeChat.decodeInbound(bytes(String(follow.prefix(cut))))
            }
        }
        // WeChat never declares a document type; entities would be expanded or read from files.
        let expansion =
            #"<!DOCTYPE xml [<!ENTITY a "AAAA"><!ENTITY b "&a;&a;&a;&a;">]>"#
            + follow.replacingOccurrences(of: "<Event>", with: "<Content>&b;</Content><Event>")
        #expect(throws: WebhookDecodingError.self) { try WeChat.decodeInbound(bytes(expansion)) }
        let external =
            #"<!DOCTYPE xml [<!ENTITY e SYSTEM "file:///etc/hostname">]>"#
            + follow.replacingOccurrences(of: "oW7x0tExampleOpenId", with: "o&e;")
        #expect(throws: WebhookDecodingError.self) { try WeChat.decodeInbound(bytes(external)) }
        // A name that is not UTF-8 crashed Foundation's XMLParser (the fuzzer's body, cut to what did it).
        #expect(throws: WebhookDecodingError.self) {
            try WeChat.decodeInbound(
                Array("<xml><S".utf8) + [0xFB] + Array(">x</S".utf8) + [0xFB] + Array("></xml>".utf8))
        }
        #expect(throws: WebhookDecodingError.self) { try WeChat.decodeInbound(bytes("<xml><a>1</b></xml>")) }
        #expect(throws: WebhookDecodingError.self) { try WeChat.decodeInbound(bytes(follow + "<xml></xml>")) }
        #expect(throws: WebhookDecodingError.self) {
            try WeChat.decodeInbound(
                bytes(follow.replacingOccurrences(of: "<Event>", with: "<Content>&nbsp;</Content><Event>")))
        }
        let nesting = String(repeating: "<a>", count: 40) + String(repeating: "</a>", count: 40)
        #expect(throws: WebhookDecodingError.self) {
            try WeChat.decodeInbound(
                bytes(follow.replacingOccurrences(of: "<Event>", with: "<Menu>\(nesting)</Menu><Event>")))
        }
        // What WeChat may also send: a declaration, comments, references, a child with children of its own (skipped).
        let rich =
            "\u{FEFF}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- push -->"
            + follow.replacingOccurrences(
                of: "<Event>",
                with: "<Content>a &lt;b&gt; &amp; &#20013;&#x6587; <!-- c --><![CDATA[<d>]]></Content>"
                    + "<ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>1</ScanResult></ScanCodeInfo><Empty/><Event>"
            ) + "\n"
        let decoded = try WeChat.decodeInbound(Array(rich.utf8))
        #expect(decoded.content == "a <b> & 中文 <d>" && decoded.event == "subscribe")
        // Random bytes, and the sample with bytes changed at random: an answer or an error, never a crash.
        var generator = SplitMix64(seed: 20_261_204)
        for round in 0..<3_000 {
            var body = Array(follow.utf8)
            if round % 3 == 0 {
                body =
                    [UInt8(ascii: "<")]
                    + (0..<Int(generator.next() % 300)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            } else {
                for _ in 0..<(1 + Int(generator.next() % 4)) {
                    body[Int(generator.next() % UInt64(body.count))] = UInt8(truncatingIfNeeded: generator.next())
                }
            }
            _ = try? WeChat.decodeInbound(body)
        }
        let reply = WeChat.passiveReply(to: message, content: "已切换为中文。", now: 1_767_261_601)
        #expect(
            reply
                == "<xml><ToUserName><![CDATA[oW7x0tExampleOpenId]]></ToUserName><FromUserName><![CDATA[gh_1a2b3c4d5e6f]]></FromUserName><CreateTime>1767261601</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[已切换为中文。]]></Content></xml>"
        )
    }
}

@Test("constant-time comparison")
func constantTime() {
    #expect(constantTimeEquals(Array("abc".utf8), Array("abc".utf8)))
    #expect(!constantTimeEquals(Array("abc".utf8), Array("abd".utf8)))
    #expect(!constantTimeEquals(Array("abc".utf8), Array("ab".utf8)))
}
