import BanditoreCore
import BanditoreProviderSim
import BanditoreTesting
import Foundation
import Testing

/// Sends whose outcome the dispatcher cannot know: the provider took the message and answered after the request's
/// timeout. Where the provider drops a repeated request (WeChat's `client_msg_id`), the retries deliver nothing twice.
@Suite("A send whose answer comes too late is retried without a second delivery where the provider allows it")
struct UnknownOutcomeTests {
    @Test(
        "WeChat answers every template send after the dispatcher's timeout: each recipient once, unknown outcomes counted and logged, last_error cleared"
    )
    func wechatLateAnswers() async throws {
        let harness = try await DispatchHarness.make(
            "it_dispatch_late", simPort: 19395,
            simEnvironment: [
                "SIM_RATE_LIMITS": "false", "SIM_WECHAT_LATE_RATE": "1", "SIM_FAULTS_TIMEOUT_SECONDS": "4",
            ]
        )
        var processes: [ServiceProcess] = []
        do {
            processes.append(
                try await harness.dispatcher(
                    .wechat, port: 18395,
                    environment: [
                        // A second is long enough to get a connection and write on a loaded machine, and short
                        // of the simulator's late answer.
                        "DISPATCH_RATE_PER_SECOND": "0", "DISPATCH_REQUEST_TIMEOUT_SECONDS": "1",
                        "DISPATCH_RETRY_BACKOFF_SCALE": "0.2", "DISPATCH_MAX_ATTEMPTS": "12",
                    ]
                )
            )
            let bulletin = UUID()
            let recipients = try await DeliveryFixtures.seed(
                harness.database, channel: .wechat, addresses: (0..<100).map { DeliveryFixtures.address(.wechat, $0) },
                bulletinID: bulletin
            )
            try await DeliveryFixtures.publishJobs(
                harness.amqp, channel: .wechat, recipients: recipients, bulletinID: bulletin)
            // Every first attempt is taken by the provider and answered too late.
            let taken = await eventually(timeout: .seconds(60)) {
                (try? await harness.channelStats(.wechat).accepted) == 100
            }
            let seen = try await harness.channelStats(.wechat)
            #expect(taken, "\(seen)")
            try await harness.simSettings(#"{"wechat":{"lateRate":0}}"#)
            let states = try await harness.waitUntilSettled(bulletin, timeout: .seconds(120))
            #expect(states == ["sent": 100], "\(states)")
            let stats = try await harness.channelStats(.wechat)
            #expect(stats.accepted == 100 && stats.duplicates == 0, "\(stats)")
            #expect(stats.repeatsDropped >= 100, "each retry carried its delivery's client_msg_id: \(stats)")
            let row = try await harness.database.query(
                """
                SELECT min(attempts), count(*) FILTER (WHERE last_error IS NULL)
                  FROM deliveries WHERE bulletin_id = \(bulletin)
                """
            ).first!.decode(Int.self, Int.self)
            #expect(row.0 >= 2, "the late first attempt counts")
            #expect(row.1 == 100, "a delivery sent on a later attempt keeps no earlier error")
            let metrics = await processes[0].get("/metrics")?.body ?? ""
            let unknown = metricValue(metrics, #"banditore_dispatch_failed_total{channel="wechat",kind="unknown"}"#)
            #expect((unknown ?? 0) >= 100, "\(metrics.prefix(3000))")
            let log = processes[0].log
            #expect(log.contains("send outcome unknown; retrying"), "\(log.suffix(2000))")
            #expect(log.contains(#""retry.may_repeat":"false""#), "\(log.suffix(2000))")
            for process in processes { #expect(await harness.terminate(process) == 0) }
            await harness.stop()
        } catch {
            await harness.stop(processes)
            throw error
        }
    }
}
