import BanditoreChannels
import BanditoreCore
import BanditoreProviderSim
import Configuration
import Foundation
import Testing

/// The providers' behaviour as the simulator plays it, read back with the same codecs the dispatchers use.
struct ProviderSimulatorTests {
    // MARK: Rate limits

    @Test func whatsappBurstAboveTheNumberLimitGets130429() async throws {
        try await withSimulator({ $0.behaviour.whatsapp.messagesPerSecond = 10 }) { _, client in
            var accepted = 0
            var throttled: [SimClient.Answer] = []
            let start = ContinuousClock.now
            for i in 0..<30 {
                let answer = try await client.whatsappTemplate(to: "3934700\(10_000 + i)")
                if answer.status == 200 { accepted += 1 } else { throttled.append(answer) }
            }
            // The bucket holds one second's worth, and refills at 10/s while the burst runs.
            #expect((10...10 + refill(start, perSecond: 10)).contains(accepted))
            #expect(throttled.count == 30 - accepted)
            let first = try #require(throttled.first)
            #expect(first.status == 400)
            let error = try #require(first.json["error"] as? [String: Any])
            #expect(error["code"] as? Int == 130429)
            #expect(error["type"] as? String == "OAuthException")
            #expect((error["message"] as? String)?.hasPrefix("(#130429)") == true)
            #expect((error["error_data"] as? [String: Any])?["messaging_product"] as? String == "whatsapp")
            #expect(error["fbtrace_id"] is String)
            guard
                case .failure(.channelThrottled) = WhatsApp.decodeSendResponse(status: first.status, body: first.bytes)
            else {
                Issue.record("130429 not classified as the channel's throttle")
                return
            }
        }
    }

    @Test func whatsappPairRateGets131056WithASixSecondHint() async throws {
        try await withSimulator { _, client in
            var answers: [SimClient.Answer] = []
            for _ in 0..<5 { answers.append(try await client.whatsappTemplate(to: "393470000001")) }
            // Strict by default: no burst, a second message to the user within 6 s is refused.
            #expect(answers.map(\.status) == [200, 400, 400, 400, 400])
            let refused = answers[1]
            #expect(refused.status == 400)
            #expect((refused.json["error"] as? [String: Any])?["code"] as? Int == 131056)
            #expect(
                WhatsApp.decodeSendResponse(status: refused.status, body: refused.bytes)
                    == .failure(
                        .rateLimited(
                            retryAfter: .seconds(6),
                            reason: "(#131056) (Business Account, Consumer Account) pair rate limit hit"))
            )
        }
    }

    @Test func telegramBurstGets429WithRetryAfter() async throws {
        try await withSimulator { simulator, client in
            var statuses: [Int] = []
            var refused: SimClient.Answer?
            let start = ContinuousClock.now
            for i in 0..<40 {
                let answer = try await client.telegram(chat: String(100 + i))
                statuses.append(answer.status)
                if answer.status != 200 && refused == nil { refused = answer }
            }
            let ok = statuses.filter { $0 == 200 }.count
            #expect((30...30 + refill(start, perSecond: 30)).contains(ok))
            #expect(ok < 40)
            #expect(statuses.filter { $0 == 429 }.count == 40 - ok)
            let answer = try #require(refused)
            #expect(answer.json["ok"] as? Bool == false)
            #expect(answer.json["error_code"] as? Int == 429)
            let retryAfter = try #require((answer.json["parameters"] as? [String: Any])?["retry_after"] as? Int)
            #expect(retryAfter >= 1)
            #expect(answer.json["description"] as? String == "Too Many Requests: retry after \(retryAfter)")
            #expect(
                Telegram.decodeSendResponse(status: answer.status, body: answer.bytes)
                    == .failure(
                        .channelThrottled(
                            retryAfter: .seconds(retryAfter), reason: "Too Many Requests: retry after \(retryAfter)"))
            )
            #expect(simulator.stats().channels["telegram"]?.throttled == 40 - ok)
        }
    }

    @Test func telegramPerChatLimitHoldsWithNoBurstByDefault() async throws {
        try await withSimulator { _, client in
            var statuses: [Int] = []
            for _ in 0..<5 { statuses.append(try await client.telegram(chat: "123456789").status) }
            #expect(statuses == [200, 429, 429, 429, 429])
        }
        // A burst stays an option.
        try await withSimulator({
            $0.behaviour.telegramChatBurst = 3
            $0.behaviour.whatsappPairBurst = 2
        }) { _, client in
            var statuses: [Int] = []
            for _ in 0..<5 { statuses.append(try await client.telegram(chat: "123456789").status) }
            #expect(statuses == [200, 200, 200, 429, 429])
            var whatsapp: [Int] = []
            for _ in 0..<3 { whatsapp.append(try await client.whatsappTemplate(to: "393470000001").status) }
            #expect(whatsapp == [200, 200, 400])
        }
        try await withSimulator { _, client in
            // Paid broadcasts have their own, higher account limit; the per-chat pace still holds.
            let other = try await client.telegram(chat: "123456790", extra: ",\"allow_paid_broadcast\":true")
            #expect(other.status == 200)
        }
    }

    @Test func limitsOffAcceptsEverything() async throws {
        try await withSimulator({ $0.behaviour.rateLimits = false }) { simulator, client in
            for _ in 0..<50 {
                let answer = try await client.telegram(chat: "42")
                #expect(answer.status == 200)
            }
            #expect(simulator.stats().channels["telegram"]?.accepted == 50)
        }
    }

    // MARK: Repeats

    @Test(
        "WeChat drops a template send repeating a user's client_msg_id within its window, answering as the first time")
    func wechatClientMessageID() async throws {
        try await withSimulator({ $0.behaviour.wechatClientMessageIDWindowSeconds = 1 }) { simulator, client in
            let token = try await client.wechatToken()
            let first = try await client.wechatTemplate(token: token, to: "oA", clientMessageID: "banditore-d1")
            let again = try await client.wechatTemplate(token: token, to: "oA", clientMessageID: "banditore-d1")
            #expect(first.json["errcode"] as? Int == 0 && again.json["errcode"] as? Int == 0)
            #expect(first.json["msgid"] as? Int != nil && first.json["msgid"] as? Int == again.json["msgid"] as? Int)
            // Another user, another id, or none: each sent.
            #expect(
                try await client.wechatTemplate(token: token, to: "oB", clientMessageID: "banditore-d1").json["errcode"]
                    as? Int == 0)
            #expect(
                try await client.wechatTemplate(token: token, to: "oA", clientMessageID: "banditore-d2").json["errcode"]
                    as? Int == 0)
            #expect(try await client.wechatTemplate(token: token, to: "oA").json["errcode"] as? Int == 0)
            var stats = try #require(simulator.stats().channels["wechat"])
            #expect(stats.accepted == 4 && stats.repeatsDropped == 1, "\(stats)")
            // After the window the same id sends again; an id over 64 bytes is refused.
            try await Task.sleep(for: .milliseconds(1100))
            #expect(
                try await client.wechatTemplate(token: token, to: "oA", clientMessageID: "banditore-d1").json["errcode"]
                    as? Int == 0)
            let long = try await client.wechatTemplate(
                token: token, to: "oA", clientMessageID: String(repeating: "x", count: 65))
            #expect(long.json["errcode"] as? Int == 45067)
            stats = try #require(simulator.stats().channels["wechat"])
            #expect(stats.accepted == 5 && stats.repeatsDropped == 1, "\(stats)")
        }
    }

    @Test("a late answer: the message is taken, the answer held for the timeout")
    func lateAnswer() async throws {
        try await withSimulator({
            $0.behaviour.telegram.lateRate = 1
            $0.behaviour.timeoutSeconds = 0.3
        }) { simulator, client in
            let start = ContinuousClock.now
            let answer = try await client.telegram(chat: "42")
            #expect(answer.status == 200)
            #expect(ContinuousClock.now - start >= .milliseconds(300))
            let stats = try #require(simulator.stats().channels["telegram"])
            #expect(stats.accepted == 1 && stats.lateAnswers == 1)
        }
    }

    // MARK: Tokens and credentials

    @Test func wechatTokenExpiresAndIsRefusedAfterwards() async throws {
        try await withSimulator({ $0.behaviour.wechatTokenLifetimeSeconds = 1 }) { _, client in
            let token = try await client.wechatToken()
            #expect(token.count >= 512)
            let ok = try await client.wechatTemplate(token: token, to: "oW7x0tExampleOpenId")
            #expect(ok.json["errcode"] as? Int == 0)
            #expect(ok.json["msgid"] is NSNumber)
            try await Task.sleep(for: .milliseconds(1300))
            let expired = try await client.wechatTemplate(token: token, to: "oW7x0tExampleOpenId")
            #expect(expired.status == 200)
            #expect(expired.json["errcode"] as? Int == 42001)
            guard case .failure(.auth) = WeChat.decodeSendResponse(status: expired.status, body: expired.bytes) else {
                Issue.record("42001 not classified as auth")
                return
            }
            let fresh = try await client.wechatToken()
            #expect(
                try await client.wechatTemplate(token: fresh, to: "oW7x0tExampleOpenId").json["errcode"] as? Int == 0)
        }
    }

    @Test func aReplacedWeChatTokenLivesForTheOverlapOnly() async throws {
        try await withSimulator({ $0.behaviour.wechatTokenOverlapSeconds = 0 }) { _, client in
            let first = try await client.wechatToken()
            let second = try await client.wechatToken()
            #expect(first != second)
            #expect(try await client.wechatTemplate(token: first, to: "oA").json["errcode"] as? Int == 40001)
            #expect(try await client.wechatTemplate(token: second, to: "oA").json["errcode"] as? Int == 0)
            #expect(try await client.wechatTemplate(token: "", to: "oA").json["errcode"] as? Int == 41001)
        }
        try await withSimulator { simulator, client in
            let first = try await client.wechatToken()
            _ = try await client.wechatToken()
            #expect(try await client.wechatTemplate(token: first, to: "oA").json["errcode"] as? Int == 0)
            simulator.expireWeChatTokens()
            let stale = try await client.wechatToken()
            #expect(try await client.wechatTemplate(token: stale, to: "oA").json["errcode"] as? Int == 0)
        }
    }

    @Test func wechatTokenCredentialsAndStableToken() async throws {
        try await withSimulator { _, client in
            let wrongApp = try await client.send(.GET, "/cgi-bin/token?grant_type=client_credential&appid=wx0&secret=x")
            #expect(wrongApp.json["errcode"] as? Int == 40013)
            let wrongSecret = try await client.send(
                .GET, "/cgi-bin/token?grant_type=client_credential&appid=wxsim0000000001&secret=nope"
            )
            #expect(wrongSecret.json["errcode"] as? Int == 40125)
            let body =
                "{\"grant_type\":\"client_credential\",\"appid\":\"wxsim0000000001\",\"secret\":\"sim-wechat-app-secret\""
            let a = try await client.send(.POST, "/cgi-bin/stable_token", json: body + ",\"force_refresh\":false}")
            let b = try await client.send(.POST, "/cgi-bin/stable_token", json: body + ",\"force_refresh\":false}")
            let c = try await client.send(.POST, "/cgi-bin/stable_token", json: body + ",\"force_refresh\":true}")
            #expect(a.json["access_token"] as? String == b.json["access_token"] as? String)
            #expect(c.json["access_token"] as? String != a.json["access_token"] as? String)
        }
    }

    @Test func wechatTokenDailyQuota() async throws {
        try await withSimulator({ $0.behaviour.wechatTokenDailyQuota = 2 }) { _, client in
            _ = try await client.wechatToken()
            _ = try await client.wechatToken()
            let third = try await client.send(
                .GET, "/cgi-bin/token?grant_type=client_credential&appid=wxsim0000000001&secret=sim-wechat-app-secret"
            )
            #expect(third.json["errcode"] as? Int == 45009)
        }
    }

    @Test func revokedWhatsAppTokenAndWrongTelegramToken() async throws {
        try await withSimulator { _, client in
            #expect(try await client.whatsappTemplate(to: "393470000001").status == 200)
            let rotate = try await client.send(.POST, "/sim/whatsapp/token", json: "{\"accessToken\":\"new-token\"}")
            #expect(rotate.status == 200)
            let old = try await client.whatsappText(to: "393470000002")
            #expect(old.status == 401)
            #expect((old.json["error"] as? [String: Any])?["code"] as? Int == 190)
            guard case .failure(.auth) = WhatsApp.decodeSendResponse(status: old.status, body: old.bytes) else {
                Issue.record("190 not classified as auth")
                return
            }
            let wrong = try await client.send(.POST, "/bot1:wrong/sendMessage", json: "{\"chat_id\":1,\"text\":\"x\"}")
            #expect(wrong.status == 401)
            #expect(wrong.json["description"] as? String == "Unauthorized")
            let method = try await client.send(.POST, "/bot7770001:sim-telegram-token/sendNothing", json: "{}")
            #expect(method.status == 404)
        }
    }

    // MARK: People

    @Test func aBlockedTelegramUserIsRefusedPermanently() async throws {
        try await withSimulator({ $0.blocked[.telegram] = ["123456789"] }) { _, client in
            for _ in 0..<3 {
                let answer = try await client.telegram(chat: "123456789")
                #expect(answer.status == 403)
                #expect(answer.json["description"] as? String == "Forbidden: bot was blocked by the user")
                #expect(
                    Telegram.decodeSendResponse(status: answer.status, body: answer.bytes)
                        == .failure(.permanent(code: "403", reason: "Forbidden: bot was blocked by the user"))
                )
            }
            let unknown = try await client.send(
                .POST, "/sim/people", json: "{\"channel\":\"telegram\",\"addresses\":[\"55\"],\"state\":\"unknown\"}")
            #expect(unknown.status == 200)
            let missing = try await client.telegram(chat: "55")
            #expect(missing.status == 400)
            #expect(missing.json["description"] as? String == "Bad Request: chat not found")
        }
    }

    @Test func wechatNonFollowersAndUnknownOpenIDsAreRefused() async throws {
        try await withSimulator({
            $0.blocked[.wechat] = ["oGone"]
            $0.unknown[.wechat] = ["oNobody"]
        }) { _, client in
            let token = try await client.wechatToken()
            let gone = try await client.wechatTemplate(token: token, to: "oGone")
            #expect(gone.json["errcode"] as? Int == 43004)
            #expect((gone.json["errmsg"] as? String)?.hasPrefix("require subscribe") == true)
            guard case .failure(.permanent(code: "43004", _)) = WeChat.decodeSendResponse(status: 200, body: gone.bytes)
            else {
                Issue.record("43004 not permanent")
                return
            }
            #expect(try await client.wechatTemplate(token: token, to: "oNobody").json["errcode"] as? Int == 40003)
        }
    }

    @Test func whatsappUnreachableAndClosedWindowsFailInResponseWhenAsked() async throws {
        try await withSimulator({
            $0.blocked[.whatsapp] = ["393470000009"]
            $0.behaviour.whatsappFailuresInResponse = true
        }) { simulator, client in
            let blocked = try await client.whatsappTemplate(to: "393470000009")
            #expect((blocked.json["error"] as? [String: Any])?["code"] as? Int == 131026)
            guard
                case .failure(.permanent(code: "131026", _)) = WhatsApp.decodeSendResponse(
                    status: blocked.status, body: blocked.bytes)
            else {
                Issue.record("131026 not permanent")
                return
            }
            // Free text to someone who never wrote: outside the 24 h window.
            let closed = try await client.whatsappText(to: "393470000010")
            #expect((closed.json["error"] as? [String: Any])?["code"] as? Int == 131047)
            // After the citizen writes, free text goes.
            simulator.apply(.init(channel: .whatsapp, addresses: ["393470000010"], state: .reachable, inbound: true))
            #expect(try await client.whatsappText(to: "393470000010").status == 200)
        }
    }

    @Test func blockedShareIsAStableShareOfAddresses() async throws {
        try await withSimulator({
            $0.behaviour.blockedShare = 0.1
            $0.behaviour.rateLimits = false
        }) { _, client in
            var first: [Int] = []
            var second: [Int] = []
            for i in 0..<500 { first.append(try await client.telegram(chat: String(1000 + i)).status) }
            for i in 0..<500 { second.append(try await client.telegram(chat: String(1000 + i)).status) }
            #expect(first == second)
            let blocked = first.filter { $0 == 403 }.count
            #expect((25...75).contains(blocked))
        }
    }

    // MARK: Faults

    @Test(arguments: [Channel.whatsapp, .telegram, .wechat])
    func faultInjectionAtTwentyPercentGivesAboutTwentyPercent(channel: Channel) async throws {
        try await withSimulator({
            $0.behaviour.rateLimits = false
            $0.behaviour[channel].errorRate = 0.2
        }) { simulator, client in
            let token = channel == .wechat ? try await client.wechatToken() : ""
            var transient = 0
            let total = 2000
            for i in 0..<total {
                let outcome: ProviderFailure?
                switch channel {
                case .whatsapp:
                    let a = try await client.whatsappTemplate(to: "3934\(10_000_000 + i)")
                    if case .failure(let f) = WhatsApp.decodeSendResponse(status: a.status, body: a.bytes) {
                        outcome = f
                    } else {
                        outcome = nil
                    }
                case .telegram:
                    let a = try await client.telegram(chat: String(10_000 + i))
                    if case .failure(let f) = Telegram.decodeSendResponse(status: a.status, body: a.bytes) {
                        outcome = f
                    } else {
                        outcome = nil
                    }
                case .wechat:
                    let a = try await client.wechatTemplate(token: token, to: "oFault\(i)")
                    if case .failure(let f) = WeChat.decodeSendResponse(status: a.status, body: a.bytes) {
                        outcome = f
                    } else {
                        outcome = nil
                    }
                }
                if let outcome {
                    guard case .transient = outcome else {
                        Issue.record("an injected fault classified as \(outcome)")
                        return
                    }
                    transient += 1
                }
            }
            // Binomial(2000, 0.2): mean 400, standard deviation ~18; ±60 is more than 3 deviations.
            #expect((340...460).contains(transient), "\(transient) faults in \(total)")
            #expect(simulator.stats().channels[channel.rawValue]?.faults == transient)
            #expect(simulator.stats().channels[channel.rawValue]?.accepted == total - transient)
        }
    }

    @Test func timeoutsHoldTheRequestAndLatencyIsAdded() async throws {
        try await withSimulator({
            $0.behaviour.telegram.timeoutRate = 1
            $0.behaviour.timeoutSeconds = 0.3
            $0.behaviour.whatsapp.latencyMs = 150
        }) { _, client in
            let start = ContinuousClock.now
            let answer = try await client.telegram(chat: "1")
            #expect(start.duration(to: .now) >= .milliseconds(300))
            #expect(answer.status == 502)
            let slow = ContinuousClock.now
            #expect(try await client.whatsappTemplate(to: "393470000001").status == 200)
            #expect(slow.duration(to: .now) >= .milliseconds(150))
        }
    }

    @Test func settingsChangeWhileRunningAndUnknownOnesAreRefused() async throws {
        try await withSimulator { _, client in
            let changed = try await client.send(.PUT, "/sim/settings", json: "{\"telegram\":{\"errorRate\":1}}")
            #expect(changed.status == 200)
            #expect(try await client.telegram(chat: "1").status == 500)
            let wrong = try await client.send(.PUT, "/sim/settings", json: "{\"telegram\":{\"errorRat\":1}}")
            #expect(wrong.status == 400)
            #expect(wrong.text.contains("telegram.errorRat"))
            let settings = try await client.send(.GET, "/sim/settings")
            #expect((settings.json["telegram"] as? [String: Any])?["errorRate"] as? Double == 1)
        }
    }

    // MARK: Validation, with the providers' own errors

    @Test func invalidMessagesGetTheProvidersErrors() async throws {
        try await withSimulator { _, client in
            let params = try await client.whatsappTemplate(to: "393470000001", parameters: ["only one"])
            #expect((params.json["error"] as? [String: Any])?["code"] as? Int == 132000)
            let format = try await client.whatsappTemplate(to: "393470000001", parameters: ["a\\nb", "c"])
            #expect((format.json["error"] as? [String: Any])?["code"] as? Int == 132012)
            let phone = try await client.send(
                .POST, "/v21.0/999/messages", json: "{}", headers: [("authorization", "Bearer sim-whatsapp-token")]
            )
            #expect((phone.json["error"] as? [String: Any])?["error_subcode"] as? Int == 33)
            let notJSON = try await client.send(
                .POST, "/v21.0/1065403/messages", json: "{oops",
                headers: [("authorization", "Bearer sim-whatsapp-token")]
            )
            #expect(notJSON.status == 400)
            #expect((notJSON.json["error"] as? [String: Any])?["code"] as? Int == 100)

            let long = try await client.telegram(chat: "1", text: String(repeating: "a", count: 4097))
            #expect(long.json["description"] as? String == "Bad Request: message is too long")
            let markdown = try await client.telegram(
                chat: "2", text: "Sciopero il 3.12", extra: ",\"parse_mode\":\"MarkdownV2\"")
            #expect((markdown.json["description"] as? String)?.contains("Character '.' is reserved") == true)
            let escaped = try await client.telegram(
                chat: "3",
                text: Telegram.escapeMarkdownV2("Sciopero il 3.12!").replacingOccurrences(of: "\\", with: "\\\\"),
                extra: ",\"parse_mode\":\"MarkdownV2\""
            )
            #expect(escaped.status == 200)
            let form = try await client.send(
                .POST, "/bot7770001:sim-telegram-token/sendMessage?chat_id=@comune_scuola&text=Mensa%20chiusa"
            )
            #expect(
                ((form.json["result"] as? [String: Any])?["chat"] as? [String: Any])?["type"] as? String == "channel")

            let token = try await client.wechatToken()
            let big = try await client.wechatCustom(token: token, to: "oA", content: String(repeating: "中", count: 700))
            #expect(big.json["errcode"] as? Int == 45002)
            let bad = try await client.send(
                .POST, "/cgi-bin/message/template/send?access_token=\(token)", json: "{nope")
            #expect(bad.json["errcode"] as? Int == 47001)
        }
    }

    // MARK: Recording

    @Test func acceptedMessagesAreRecordedAndInspectable() async throws {
        try await withSimulator({ $0.behaviour.rateLimits = false }) { _, client in
            _ = try await client.telegram(chat: "7", text: "Allerta meteo")
            _ = try await client.telegram(chat: "8", text: "Allerta meteo")
            _ = try await client.telegram(chat: "7", text: "Allerta meteo")
            _ = try await client.whatsappTemplate(to: "393470000001")
            let seven = try await client.send(.GET, "/sim/messages?channel=telegram&recipient=7")
            let messages = try #require(seven.json["messages"] as? [[String: Any]])
            #expect(messages.count == 2)
            #expect(messages.allSatisfy { $0["text"] as? String == "Allerta meteo" })
            #expect(messages.first?["providerMessageID"] is String)
            let all = try await client.send(.GET, "/sim/messages?after=1")
            #expect((all.json["messages"] as? [[String: Any]])?.count == 3)
            let template = try #require(
                (try await client.send(.GET, "/sim/messages?channel=whatsapp").json["messages"] as? [[String: Any]])?
                    .first
            )
            #expect(template["template"] as? String == "banditore_bulletin")
            #expect(template["parameters"] as? [String] == ["Allerta meteo", "Scuole chiuse domani"])

            let duplicates = try await client.send(.GET, "/sim/duplicates")
            let list = try #require(duplicates.json["duplicates"] as? [[String: Any]])
            #expect(list.count == 1)
            #expect(list.first?["recipient"] as? String == "7")
            #expect(list.first?["count"] as? Int == 2)

            let stats = try await client.send(.GET, "/sim/stats")
            let telegram = try #require((stats.json["channels"] as? [String: Any])?["telegram"] as? [String: Any])
            #expect(telegram["accepted"] as? Int == 3)
            #expect(telegram["recipients"] as? Int == 2)
            #expect(telegram["duplicates"] as? Int == 1)

            #expect(try await client.send(.POST, "/sim/reset").status == 200)
            #expect((try await client.send(.GET, "/sim/messages").json["messages"] as? [Any])?.isEmpty == true)
        }
    }

    // MARK: Configuration

    @Test func configurationFromFlagsAndEnvironment() {
        let reader = ConfigReader(providers: [
            CommandLineArgumentsProvider(arguments: [
                "banditore-provider-sim", "--sim-faults-error-rate", "0.2", "--sim-telegram-latency-ms", "40",
                "--telegram-bot-token", "1:flag",
            ]),
            EnvironmentVariablesProvider(environmentVariables: [
                "SIM_RATE_LIMITS": "false", "SIM_BLOCKED": "telegram:1,whatsapp:39347", "SIM_FAULTS_ERROR_RATE": "0.9",
                "WHATSAPP_TEMPLATES": "banditore_bulletin:2,banditore_reply:1",
                "SIM_WECHAT_TOKEN_LIFETIME_SECONDS": "60",
                "INGEST_URL": "http://ingest:8080",
            ]),
        ])
        let configuration = SimulatorConfiguration(reader: reader)
        #expect(configuration.behaviour.wechat.errorRate == 0.2)  // the flag wins over the environment
        #expect(configuration.behaviour.telegram.latencyMs == 40)
        #expect(configuration.behaviour.whatsapp.latencyMs == 0)
        #expect(configuration.behaviour.rateLimits == false)
        #expect(configuration.blocked[.telegram] == ["1"])
        #expect(configuration.blocked[.whatsapp] == ["39347"])
        #expect(configuration.whatsappTemplates == ["banditore_bulletin": 2, "banditore_reply": 1])
        #expect(configuration.behaviour.wechatTokenLifetimeSeconds == 60)
        #expect(configuration.telegramBotToken == "1:flag")
        #expect(configuration.ingestURL == "http://ingest:8080")
    }
}

/// Tokens a bucket refilled since `start`, rounded up.
private func refill(_ start: ContinuousClock.Instant, perSecond: Double) -> Int {
    Int(start.duration(to: .now).inSeconds * perSecond) + 1
}
