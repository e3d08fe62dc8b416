import BanditoreChannels
import BanditoreCore
import BanditoreTesting
import Foundation
import Hummingbird
import Testing

@testable import BanditoreProviderSim

/// The citizens the simulator plays: signed webhooks that the Channels codecs accept, as ingest will read them.
struct CitizenTests {
    @Test func citizensSubscribeOnAllThreeChannelsWithValidSignatures() async throws {
        let inbox = WebhookInbox()
        try await inbox.serve { url in
            try await withSimulator({ $0.ingestURL = url }) { simulator, _ in
                for channel in Channel.allCases {
                    let report = await simulator.play(
                        .init(channel: channel, action: .subscribe, count: 100, concurrency: 8))
                    #expect(report.citizens == 100)
                    #expect(report.accepted == 100, "\(report)")
                    #expect(report.statuses == ["200": 100])
                    #expect(report.latencyMs.p99 > 0)
                }
            }
        }
        let received = inbox.all
        #expect(received.count == 300)

        let whatsapp = received.filter { $0.path == "/webhooks/whatsapp" }
        var whatsappIDs = Set<String>()
        for hook in whatsapp {
            #expect(
                WhatsApp.verifySignature(
                    header: hook.headers["x-hub-signature-256"], body: hook.body,
                    appSecret: "sim-whatsapp-app-secret"
                ))
            let events = try WhatsApp.decodeWebhook(hook.body)
            guard case .message(let message) = try #require(events.first) else {
                Issue.record("not a message")
                continue
            }
            #expect(message.text == "ATTIVA ISCRIZIONE")
            #expect(message.from.hasPrefix("39347"))
            whatsappIDs.insert(message.id)
        }
        #expect(whatsappIDs.count == 100)

        let telegram = received.filter { $0.path == "/webhooks/telegram" }
        var updateIDs = Set<Int64>()
        for hook in telegram {
            #expect(
                Telegram.verifySecret(
                    header: hook.headers["x-telegram-bot-api-secret-token"], secret: "sim-telegram-secret"
                ))
            guard
                case .message(let updateID, _, _, let language, _, let command, _, _) = try Telegram.decodeUpdate(
                    hook.body)
            else {
                Issue.record("not a message")
                continue
            }
            #expect(command == "/start")
            #expect(language == "it")
            updateIDs.insert(updateID)
        }
        #expect(updateIDs.count == 100)

        let wechat = received.filter { $0.path == "/webhooks/wechat" }
        for hook in wechat {
            #expect(WeChat.verifySignature(query: parseForm(Substring(hook.query)), token: "sim-wechat-token"))
            let inbound = try WeChat.decodeInbound(hook.body)
            #expect(inbound.messageType == "event")
            #expect(inbound.event == "subscribe")
            #expect(inbound.toUser == "gh_1a2b3c4d5e6f")
            #expect(parseForm(Substring(hook.query))["openid"] == inbound.fromUser)
        }
        #expect(Set(wechat.map { try! WeChat.decodeInbound($0.body).fromUser }).count == 100)
    }

    @Test func commandsTopicsLanguagesAndBlocking() async throws {
        let inbox = WebhookInbox()
        try await inbox.serve { url in
            try await withSimulator({ $0.ingestURL = url }) { simulator, client in
                let chat = ProviderSimulator.citizenAddress(channel: .telegram, index: 7)
                _ = await simulator.play(
                    .init(channel: .telegram, action: .subscribe, topic: "scuola", language: "zh", addresses: [chat]))
                _ = await simulator.play(
                    .init(channel: .telegram, action: .text, text: "/lingua zh", addresses: [chat]))
                _ = await simulator.play(.init(channel: .whatsapp, action: .text, text: "SEGUI farmacie", count: 1))
                _ = await simulator.play(.init(channel: .wechat, action: .text, text: "中文", count: 1))
                let blocked = await simulator.play(.init(channel: .telegram, action: .block, addresses: [chat]))
                #expect(blocked.accepted == 1)
                // The simulator now refuses sends to the citizen who blocked the bot.
                let refused = try await client.telegram(chat: chat)
                #expect(refused.status == 403)
                _ = await simulator.play(.init(channel: .telegram, action: .unblock, addresses: [chat]))
                let allowed = try await client.telegram(chat: chat)
                #expect(allowed.status == 200)
            }
        }
        let updates = try inbox.all.filter { $0.path == "/webhooks/telegram" }.map {
            try Telegram.decodeUpdate($0.body)
        }
        #expect(updates.count == 4)
        guard case .message(_, _, _, "zh", "/start scuola", "/start", "scuola", _) = updates[0] else {
            Issue.record("deep link: \(updates[0])")
            return
        }
        guard case .message(_, _, _, _, _, "/lingua", "zh", _) = updates[1] else {
            Issue.record("language command: \(updates[1])")
            return
        }
        guard case .membership(_, _, "kicked") = updates[2], case .membership(_, _, "member") = updates[3] else {
            Issue.record("block/unblock: \(updates[2]), \(updates[3])")
            return
        }
        let whatsapp = try inbox.all.filter { $0.path == "/webhooks/whatsapp" }.flatMap {
            try WhatsApp.decodeWebhook($0.body)
        }
        guard case .message(let message) = whatsapp.first else {
            Issue.record("no WhatsApp message")
            return
        }
        #expect(message.text == "SEGUI farmacie")
        let wechat = try inbox.all.filter { $0.path == "/webhooks/wechat" }.map { try WeChat.decodeInbound($0.body) }
        #expect(wechat.first?.content == "中文")
        #expect(wechat.first?.messageID != nil)
    }

    @Test func aCitizenWhoWroteCanGetFreeTextReplies() async throws {
        let inbox = WebhookInbox()
        try await inbox.serve { url in
            try await withSimulator({ $0.ingestURL = url }) { simulator, client in
                let phone = ProviderSimulator.citizenAddress(channel: .whatsapp, index: 3)
                let openID = ProviderSimulator.citizenAddress(channel: .wechat, index: 3)
                let token = try await client.wechatToken()
                // Before writing: outside the window.
                #expect(try await client.wechatCustom(token: token, to: openID).json["errcode"] as? Int == 45015)
                _ = await simulator.play(.init(channel: .whatsapp, action: .subscribe, addresses: [phone]))
                _ = await simulator.play(.init(channel: .wechat, action: .text, text: "帮助", addresses: [openID]))
                #expect(try await client.whatsappText(to: phone).status == 200)
                // Five replies per message, then 45047.
                var codes: [Int] = []
                for _ in 0..<6 {
                    codes.append(try await client.wechatCustom(token: token, to: openID).json["errcode"] as? Int ?? -99)
                }
                #expect(codes == [0, 0, 0, 0, 0, 45047])
                // An unfollow makes every send fail with 43004.
                _ = await simulator.play(.init(channel: .wechat, action: .unsubscribe, addresses: [openID]))
                #expect(try await client.wechatTemplate(token: token, to: openID).json["errcode"] as? Int == 43004)
            }
        }
    }

    @Test func webhooksAreRetriedAndDuplicatedLikeTheProvidersDo() async throws {
        let inbox = WebhookInbox(failFirstTries: true)
        try await inbox.serve { url in
            try await withSimulator({ $0.ingestURL = url }) { simulator, _ in
                let report = await simulator.play(
                    .init(channel: .whatsapp, action: .subscribe, count: 20, duplicateShare: 1)
                )
                #expect(report.accepted == 20)
                #expect(report.retries == 20)
                #expect(report.duplicatesSent == 20)
                #expect(report.statuses == ["500": 20, "200": 40])
            }
        }
        // Each citizen's message arrived twice with the same id: what ingest must deduplicate.
        let ids = try inbox.all.flatMap { try WhatsApp.decodeWebhook($0.body) }.compactMap { event -> String? in
            if case .message(let m) = event { return m.id }
            return nil
        }
        #expect(ids.count == 40)
        #expect(Set(ids).count == 20)
    }

    @Test func anUnreachableIngestIsReportedNotHidden() async throws {
        try await withSimulator({ $0.ingestURL = "http://127.0.0.1:9" }) { simulator, _ in
            let report = await simulator.play(.init(channel: .telegram, action: .subscribe, count: 2))
            #expect(report.accepted == 0)
            #expect(report.failed == 2)
            #expect(report.statuses["error"] == 6)  // three attempts each
        }
    }

    @Test func whatsappStatusesReachIngestSigned() async throws {
        let inbox = WebhookInbox()
        try await inbox.serve { url in
            var configuration = SimulatorConfiguration()
            configuration.ingestURL = url
            configuration.statusWebhooks = true
            let simulator = ProviderSimulator(configuration: configuration, logger: .init(label: "test"))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await simulator.run() }
                do {
                    let client = SimClient(simulator: simulator)
                    let template = try await client.whatsappTemplate(to: "393470000001")
                    #expect(template.status == 200)
                    let text = try await client.whatsappText(to: "393470000002")
                    #expect(text.status == 200)  // accepted; the closed window is reported by a status
                }
                #expect(await eventually { simulator.statusWebhooks.currentCounts.sent == 3 })
                group.cancelAll()
            }
        }
        let statuses = try inbox.all.flatMap { try WhatsApp.decodeWebhook($0.body) }.compactMap {
            event -> WhatsApp.StatusUpdate? in
            if case .status(let s) = event { return s }
            return nil
        }
        #expect(
            Set(statuses.map { "\($0.recipient):\($0.status)" }) == [
                "393470000001:sent", "393470000001:delivered", "393470000002:failed",
            ])
        #expect(statuses.first { $0.status == "failed" }?.errorCode == 131047)
        for hook in inbox.all {
            #expect(
                WhatsApp.verifySignature(
                    header: hook.headers["x-hub-signature-256"], body: hook.body,
                    appSecret: SimulatorConfiguration().whatsappAppSecret
                ))
        }
    }
}
