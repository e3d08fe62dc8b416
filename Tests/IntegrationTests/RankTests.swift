import BanditoreAMQP
import BanditoreCore
import BanditoreProviderSim
import BanditoreRuntime
import BanditoreTesting
import Foundation
import Testing

/// A busy day on one channel, at the providers' real limits (Telegram 30/s and one message a second per chat,
/// WhatsApp 80/s and one per 6 s per user, no burst): urgent work takes the channel, replies come next, normal
/// bulletins resume; the per-user pace holds at the provider with no refusal.
@Suite("Ranks at the providers' real limits (timing: run alone)")
struct RankTimingTests {
    @Test(
        "Telegram: an urgent bulletin posted while a normal one and replies go out takes ≥ 95% of the channel at once; replies before the normal rest; each recipient once, nothing refused"
    )
    func urgentFirst() async throws {
        let harness = try await DispatchHarness.make("it_ranks_urgent", simPort: 19396)
        var processes: [ServiceProcess] = []
        do {
            processes.append(try await harness.dispatcher(.telegram, port: 18396))
            let normal = UUID()
            let normalRecipients = try await DeliveryFixtures.seed(
                harness.database, channel: .telegram,
                addresses: (0..<1200).map { DeliveryFixtures.address(.telegram, $0) }, bulletinID: normal
            )
            try await DeliveryFixtures.publishJobs(
                harness.amqp, channel: .telegram, recipients: normalRecipients, bulletinID: normal, chunk: 500
            )
            try await Task.sleep(for: .seconds(2))
            // 600 citizens who just subscribed: one reply job each.
            let replyAddresses = (0..<600).map { DeliveryFixtures.address(.telegram, $0, salt: 1) }
            for address in replyAddresses {
                let job = DeliveryJob(
                    channel: .telegram, messages: [.italian: .text("Iscrizione attivata.")],
                    recipients: [Recipient(address: address)]
                )
                let (message, key) = BanditoreTopology.delivery(job)
                try await harness.amqp.publish(message, exchange: BanditoreTopology.deliveriesExchange, routingKey: key)
            }
            try await harness.amqp.waitForConfirms()
            try await Task.sleep(for: .seconds(2))
            let urgent = UUID()
            let urgentRecipients = try await DeliveryFixtures.seed(
                harness.database, channel: .telegram,
                addresses: (0..<300).map { DeliveryFixtures.address(.telegram, $0, salt: 2) }, bulletinID: urgent
            )
            let posted = Date()
            try await DeliveryFixtures.publishJobs(
                harness.amqp, channel: .telegram, recipients: urgentRecipients, bulletinID: urgent, chunk: 500,
                urgent: true
            )
            #expect(try await harness.waitUntilSettled(urgent, timeout: .seconds(60)) == ["sent": 300])
            #expect(try await harness.waitUntilSettled(normal, timeout: .seconds(120)) == ["sent": 1200])
            #expect(
                await eventually(timeout: .seconds(60)) {
                    (try? await harness.channelStats(.telegram).accepted) == 2100
                })

            let messages = try await harness.simMessages(.telegram)
            let urgentSet = Set(urgentRecipients.map(\.address))
            let replySet = Set(replyAddresses)
            func rank(_ message: RecordedMessage) -> DeliveryRank {
                urgentSet.contains(message.recipient)
                    ? .urgent : replySet.contains(message.recipient) ? .reply : .normal
            }
            let urgentTimes = messages.filter { rank($0) == .urgent }.map(\.acceptedAt)
            let firstUrgent = try #require(urgentTimes.min())
            let lastUrgent = try #require(urgentTimes.max())
            #expect(
                firstUrgent.timeIntervalSince(posted) <= 1,
                "first urgent send \(firstUrgent.timeIntervalSince(posted)) s after the post")
            let during = messages.filter { $0.acceptedAt >= firstUrgent && $0.acceptedAt <= lastUrgent }
            let share = Double(during.filter { rank($0) == .urgent }.count) / Double(during.count)
            #expect(share >= 0.95, "urgent share while it ran: \(share)")
            // Replies go before what is left of the normal bulletin.
            let lastReply = try #require(messages.filter { rank($0) == .reply }.map(\.acceptedAt).max())
            let firstReply = try #require(messages.filter { rank($0) == .reply }.map(\.acceptedAt).min())
            let besideReplies = messages.filter {
                $0.acceptedAt >= firstReply && $0.acceptedAt <= lastReply && rank($0) != .urgent
            }
            let replyShare = Double(besideReplies.filter { rank($0) == .reply }.count) / Double(besideReplies.count)
            #expect(replyShare >= 0.9, "replies' share of what was not urgent while they ran: \(replyShare)")
            #expect(
                messages.contains { rank($0) == .normal && $0.acceptedAt > lastReply }, "the normal bulletin resumes")
            let stats = try await harness.channelStats(.telegram)
            #expect(stats.duplicates == 0 && stats.recipients == 2100, "\(stats)")
            #expect(stats.throttled == 0, "refused for the rate or a chat's pace: \(stats.rejected)")
            for process in processes { #expect(await harness.terminate(process) == 0) }
            await harness.stop()
        } catch {
            await harness.stop(processes)
            throw error
        }
    }

    @Test(
        "Telegram with paid broadcast for urgent bulletins: 1,500 urgent sends at its 1,000/s, none refused, while a normal bulletin keeps its 30/s"
    )
    func paidBroadcast() async throws {
        let harness = try await DispatchHarness.make("it_ranks_paid", simPort: 19398)
        var processes: [ServiceProcess] = []
        do {
            processes.append(
                try await harness.dispatcher(.telegram, port: 18398, environment: ["DISPATCH_PAID_BROADCAST": "urgent"])
            )
            let normal = UUID()
            let normalRecipients = try await DeliveryFixtures.seed(
                harness.database, channel: .telegram,
                addresses: (0..<150).map { DeliveryFixtures.address(.telegram, $0) },
                bulletinID: normal
            )
            try await DeliveryFixtures.publishJobs(
                harness.amqp, channel: .telegram, recipients: normalRecipients, bulletinID: normal, chunk: 500
            )
            let urgent = UUID()
            let urgentRecipients = try await DeliveryFixtures.seed(
                harness.database, channel: .telegram,
                addresses: (0..<1500).map { DeliveryFixtures.address(.telegram, $0, salt: 3) }, bulletinID: urgent
            )
            try await DeliveryFixtures.publishJobs(
                harness.amqp, channel: .telegram, recipients: urgentRecipients, bulletinID: urgent, chunk: 500,
                urgent: true
            )
            #expect(try await harness.waitUntilSettled(urgent, timeout: .seconds(60)) == ["sent": 1500])
            #expect(try await harness.waitUntilSettled(normal, timeout: .seconds(60)) == ["sent": 150])
            let messages = try await harness.simMessages(.telegram)
            let urgentSet = Set(urgentRecipients.map(\.address))
            let urgentTimes = messages.filter { urgentSet.contains($0.recipient) }.map(\.acceptedAt).sorted()
            let span = urgentTimes.last!.timeIntervalSince(urgentTimes.first!)
            #expect(span < 4, "1,500 urgent sends took \(span) s: not at the paid rate")
            // The normal bulletin kept the free 30/s: 150 sends in about 5 s, not faster.
            let normalTimes = messages.filter { !urgentSet.contains($0.recipient) }.map(\.acceptedAt).sorted()
            #expect(normalTimes.last!.timeIntervalSince(normalTimes.first!) >= 4.5)
            let stats = try await harness.channelStats(.telegram)
            #expect(stats.throttled == 0 && stats.duplicates == 0, "\(stats)")
            for process in processes { #expect(await harness.terminate(process) == 0) }
            await harness.stop()
        } catch {
            await harness.stop(processes)
            throw error
        }
    }
}

extension RankTimingTests {
    @Test(
        "Telegram's flood signal pauses the channel: configured at 100/s against a provider allowing 10/s, few sends are refused, and everyone is sent once"
    )
    func floodSignalPausesTheChannel() async throws {
        let harness = try await DispatchHarness.make(
            "it_ranks_flood", simPort: 19399, simEnvironment: ["SIM_TELEGRAM_MESSAGES_PER_SECOND": "10"]
        )
        var processes: [ServiceProcess] = []
        do {
            processes.append(
                try await harness.dispatcher(
                    .telegram, port: 18399,
                    environment: ["DISPATCH_RATE_PER_SECOND": "100", "DISPATCH_RETRY_BACKOFF_SCALE": "0.05"]
                )
            )
            let bulletin = UUID()
            let recipients = try await DeliveryFixtures.seed(
                harness.database, channel: .telegram,
                addresses: (0..<100).map { DeliveryFixtures.address(.telegram, $0) },
                bulletinID: bulletin
            )
            try await DeliveryFixtures.publishJobs(
                harness.amqp, channel: .telegram, recipients: recipients, bulletinID: bulletin)
            #expect(try await harness.waitUntilSettled(bulletin, timeout: .seconds(90)) == ["sent": 100])
            let stats = try await harness.channelStats(.telegram)
            #expect(stats.accepted == 100 && stats.duplicates == 0, "\(stats)")
            // Without the pause, sends at 100/s against 10/s would be refused nine times in ten.
            #expect(stats.throttled < 60, "refused: \(stats.throttled)")
            #expect(processes[0].log.contains("channel paused on the provider's flood signal"))
            for process in processes { #expect(await harness.terminate(process) == 0) }
            await harness.stop()
        } catch {
            await harness.stop(processes)
            throw error
        }
    }
}

/// The per-user pace at the provider's real limits: asserted on the gaps the simulator saw, whatever the machine's load.
@Suite("Per-user pace at the providers' real limits, with one replica and with three")
struct PaceTests {
    @Test(
        "WhatsApp: two bulletins to the same 500 users back to back, with 1 and with 3 replicas: no refusal for the pace, every gap at the provider ≥ 6 s",
        arguments: [1, 3]
    )
    func whatsappPairPace(replicas: Int) async throws {
        let harness = try await DispatchHarness.make("it_ranks_pace_\(replicas)", simPort: 19437 + replicas)
        var processes: [ServiceProcess] = []
        do {
            for index in 0..<replicas {
                processes.append(try await harness.dispatcher(.whatsapp, port: 18440 + 4 * replicas + index))
            }
            let addresses = (0..<500).map { DeliveryFixtures.address(.whatsapp, $0) }
            var bulletins: [UUID] = []
            for index in 0..<2 {
                let bulletin = UUID()
                bulletins.append(bulletin)
                let recipients = try await DeliveryFixtures.seed(
                    harness.database, channel: .whatsapp, addresses: addresses, bulletinID: bulletin
                )
                try await DeliveryFixtures.publishJobs(
                    harness.amqp, channel: .whatsapp, recipients: recipients, bulletinID: bulletin, chunk: 100,
                    message: DeliveryFixtures.message(.whatsapp, text: "Bollettino \(index + 1)")
                )
            }
            for bulletin in bulletins {
                #expect(try await harness.waitUntilSettled(bulletin, timeout: .seconds(90)) == ["sent": 500])
            }
            let stats = try await harness.channelStats(.whatsapp)
            #expect(stats.accepted == 1000 && stats.duplicates == 0, "\(stats)")
            #expect(stats.rejected["131056", default: 0] == 0, "refused for the pair pace: \(stats.rejected)")
            #expect(stats.rejected["130429", default: 0] == 0, "refused for throughput: \(stats.rejected)")
            var last: [String: Date] = [:]
            var shortest = Double.infinity
            for message in try await harness.simMessages(.whatsapp) {
                if let previous = last[message.recipient] {
                    shortest = min(shortest, message.acceptedAt.timeIntervalSince(previous))
                }
                last[message.recipient] = message.acceptedAt
            }
            #expect(shortest >= 6, "shortest gap between two sends to one user: \(shortest) s")
            if replicas > 1 {
                // Each replica sent some of them: the pace held across replicas, not inside one.
                for process in processes {
                    let metrics = await process.get("/metrics")?.body ?? ""
                    let sent = metricValue(metrics, #"banditore_dispatch_sent_total{channel="whatsapp"}"#) ?? 0
                    #expect(sent > 0, "a replica that sent nothing")
                }
            }
            for process in processes { #expect(await harness.terminate(process) == 0) }
            await harness.stop()
        } catch {
            await harness.stop(processes)
            throw error
        }
    }
}
