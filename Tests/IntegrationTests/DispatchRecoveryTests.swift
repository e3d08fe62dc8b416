import BanditoreAMQP
import BanditoreCore
import BanditorePostgres
import BanditoreProviderSim
import BanditoreRuntime
import BanditoreStore
import BanditoreTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Dispatchers recover: kills, drains, poison jobs, expired tokens, urgent jobs")
struct DispatchRecoveryTests {
    @Test(
        "a replica killed with SIGKILL mid-job: after a restart everyone is delivered; duplicates ≤ sends in flight at the kill"
    )
    func killedMidJob() async throws {
        let harness = try await DispatchHarness.make(
            "it_dispatch_kill", simPort: 19360,
            simEnvironment: ["SIM_RATE_LIMITS": "false", "SIM_LATENCY_MS": "40", "SIM_LATENCY_JITTER_MS": "20"]
        )
        var processes: [ServiceProcess] = []
        do {
            let environment = [
                "DISPATCH_RATE_PER_SECOND": "300", "DISPATCH_MAX_IN_FLIGHT": "16", "DISPATCH_MAX_UNRECORDED": "15",
            ]
            let first = try await harness.dispatcher(.telegram, port: 18360, environment: environment)
            processes.append(first)
            let bulletin = UUID()
            let recipients = try await DeliveryFixtures.seed(
                harness.database, channel: .telegram,
                addresses: (0..<1500).map { DeliveryFixtures.address(.telegram, $0) },
                bulletinID: bulletin
            )
            try await DeliveryFixtures.publishJobs(
                harness.amqp, channel: .telegram, recipients: recipients, bulletinID: bulletin, chunk: 500
            )
            #expect(
                await eventually(timeout: .seconds(30)) {
                    ((try? await harness.channelStats(.telegram).accepted) ?? 0) >= 400
                })
            first.signal(SIGKILL)
            _ = await first.waitForExit()
            processes.removeAll()
            try await Task.sleep(for: .milliseconds(300))  // requests already on the wire reach the provider

            // What the provider accepted but the database does not say was sent: the sends in flight at the kill.
            let accepted = Set(try await harness.simMessages(.telegram).map(\.recipient))
            let recordedSent = Set(
                try await harness.database.query(
                    """
                    SELECT s.address FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                     WHERE d.bulletin_id = \(bulletin) AND d.state = 'sent'
                    """
                ).rows.map { try $0.decode(String.self, at: 0) }
            )
            let inFlight = accepted.subtracting(recordedSent).count
            #expect(accepted.count < 1500, "killed mid-job")
            #expect(recordedSent.isSubset(of: accepted))
            // Bounded by the sends in flight (16) plus the outcomes a replica may hold uncommitted (15), however slow
            // the database is at the time.
            #expect(inFlight <= 16 + 15, "in flight at the kill: \(inFlight)")

            processes.append(try await harness.dispatcher(.telegram, port: 18361, environment: environment))
            let states = try await harness.waitUntilSettled(bulletin, timeout: .seconds(60))
            #expect(states == ["sent": 1500], "\(states)")
            let stats = try await harness.channelStats(.telegram)
            #expect(stats.recipients == 1500, "everyone delivered")
            #expect(stats.duplicates <= inFlight, "duplicates \(stats.duplicates), in flight at the kill \(inFlight)")
            print(
                "SIGKILL mid-job: \(inFlight) sends in flight at the kill, \(stats.duplicates) duplicates after restart"
            )
            for process in processes { #expect(await harness.terminate(process) == 0) }
            await harness.stop()
        } catch {
            await harness.stop(processes)
            throw error
        }
    }

    @Test(
        "the broker restarts mid-bulletin: the dispatcher reconnects and carries on; everyone delivered, no duplicate")
    func brokerRestart() async throws {
        try await PrivateServer.with(.rabbitmq, portBase: 5794) { broker in
            try await Self.deliverAcrossBrokerRestart(broker)
        }
    }

    private static func deliverAcrossBrokerRestart(_ broker: PrivateServer) async throws {
        let servers = try await IsolatedServers.make("it_dispatch_broker")
        let harness = try await DispatchHarness.make(
            "it_dispatch_broker_sim", simPort: 19410, simEnvironment: ["SIM_RATE_LIMITS": "false"]
        )
        let amqp = try await AMQPConnection.connect(url: broker.url, logger: harness.logger)
        try await amqp.declare(BanditoreTopology.all)
        let environment = [
            "AMQP_URL": broker.url, "DATABASE_URL": servers.databaseURL, "DISPATCH_RATE_PER_SECOND": "100",
            "MIGRATE_ON_START": "true",
        ]
        let process = try await harness.dispatcher(.telegram, port: 18410, environment: environment)
        let database = try DatabasePool(url: servers.databaseURL, logger: harness.logger)
        let bulletin = UUID()
        let recipients = try await DeliveryFixtures.seed(
            database, channel: .telegram, addresses: (0..<600).map { DeliveryFixtures.address(.telegram, $0) },
            bulletinID: bulletin
        )
        try await DeliveryFixtures.publishJobs(amqp, channel: .telegram, recipients: recipients, bulletinID: bulletin)
        let started = await eventually(timeout: .seconds(30)) {
            ((try? await harness.channelStats(.telegram).accepted) ?? 0) >= 150
        }
        #expect(started)
        try await broker.stop()
        try await Task.sleep(for: .seconds(2))
        try await broker.start()
        let sentAll = await eventually(timeout: .seconds(90), every: .milliseconds(250)) {
            let row = try? await database.query(
                "SELECT count(*) FILTER (WHERE state = 'sent') FROM deliveries WHERE bulletin_id = \(bulletin)"
            ).first
            return (try? row?.decode(Int.self, at: 0)) == 600
        }
        #expect(sentAll, "log:\n\(process.log.suffix(3000))")
        let stats = try await harness.channelStats(.telegram)
        #expect(stats.recipients == 600)
        #expect(stats.duplicates == 0, "\(stats)")
        // Ready again (asked a few times: one answer can be slow on a loaded machine).
        #expect(await eventually(timeout: .seconds(15)) { await process.get("/readyz")?.status == 200 })
        #expect(await harness.terminate(process) == 0)
        await database.close()
        await amqp.close()
        await harness.stop()
    }

    @Test("the database restarts mid-bulletin: statuses wait and are written, jobs resume; everyone delivered once")
    func databaseRestart() async throws {
        try await PrivateServer.with(.postgres, portBase: 5795) { postgres in
            try await Self.deliverAcrossDatabaseRestart(postgres)
        }
    }

    private static func deliverAcrossDatabaseRestart(_ postgres: PrivateServer) async throws {
        let harness = try await DispatchHarness.make(
            "it_dispatch_pg", simPort: 19420, simEnvironment: ["SIM_RATE_LIMITS": "false"]
        )
        let database = try DatabasePool(url: postgres.url, logger: harness.logger)
        _ = try await Migrator(logger: harness.logger).migrate(database)
        let environment = [
            "AMQP_URL": harness.servers.amqpURL, "DATABASE_URL": postgres.url, "DISPATCH_RATE_PER_SECOND": "100",
        ]
        let process = try await harness.dispatcher(.telegram, port: 18420, environment: environment)
        let bulletin = UUID()
        let recipients = try await DeliveryFixtures.seed(
            database, channel: .telegram, addresses: (0..<600).map { DeliveryFixtures.address(.telegram, $0) },
            bulletinID: bulletin
        )
        try await DeliveryFixtures.publishJobs(
            harness.amqp, channel: .telegram, recipients: recipients, bulletinID: bulletin)
        let started = await eventually(timeout: .seconds(30)) {
            ((try? await harness.channelStats(.telegram).accepted) ?? 0) >= 150
        }
        #expect(started)
        try await postgres.stop()
        try await Task.sleep(for: .seconds(2))
        try await postgres.start()
        let sentAll = await eventually(timeout: .seconds(90), every: .milliseconds(250)) {
            let row = try? await database.query(
                "SELECT count(*) FILTER (WHERE state = 'sent') FROM deliveries WHERE bulletin_id = \(bulletin)"
            ).first
            return (try? row?.decode(Int.self, at: 0)) == 600
        }
        #expect(sentAll, "log:\n\(process.log.suffix(3000))")
        let stats = try await harness.channelStats(.telegram)
        #expect(stats.recipients == 600)
        // A send whose outcome was waiting for the database when it went away is repeated at most once.
        #expect(stats.duplicates <= 64, "\(stats)")
        print("database restart mid-bulletin: \(stats.duplicates) duplicates")
        // Ready again after the restart (a probe gives the database a second to answer: asked until it does).
        #expect(await eventually(timeout: .seconds(20)) { await process.get("/readyz")?.status == 200 })
        #expect(await harness.terminate(process) == 0)
        await database.close()
        await harness.stop()
    }

    @Test("SIGTERM drains: no new sends, the rest handed back, exit 0; the next replica finishes without duplicates")
    func drainOnSigterm() async throws {
        let harness = try await DispatchHarness.make(
            "it_dispatch_drain", simPort: 19370, simEnvironment: ["SIM_RATE_LIMITS": "false"])
        var processes: [ServiceProcess] = []
        do {
            let environment = ["DISPATCH_RATE_PER_SECOND": "40"]
            let first = try await harness.dispatcher(.telegram, port: 18370, environment: environment)
            processes.append(first)
            let bulletin = UUID()
            let recipients = try await DeliveryFixtures.seed(
                harness.database, channel: .telegram,
                addresses: (0..<300).map { DeliveryFixtures.address(.telegram, $0) },
                bulletinID: bulletin
            )
            try await DeliveryFixtures.publishJobs(
                harness.amqp, channel: .telegram, recipients: recipients, bulletinID: bulletin, chunk: 150
            )
            #expect(
                await eventually(timeout: .seconds(30)) {
                    ((try? await harness.channelStats(.telegram).accepted) ?? 0) >= 60
                })
            let clock = ContinuousClock()
            let start = clock.now
            let status = await harness.terminate(first)
            processes.removeAll()
            #expect(status == 0, "\(first.log.suffix(3000))")
            #expect(clock.now - start < .seconds(10), "drained quickly")
            #expect(first.log.contains("unfinished job handed back"))
            let afterDrain = try await harness.states(bulletin)
            #expect(afterDrain["sent", default: 0] < 300, "\(afterDrain)")
            let acceptedAtStop = try await harness.channelStats(.telegram).accepted
            #expect(afterDrain["sent", default: 0] == acceptedAtStop, "every send made before the exit is recorded")

            processes.append(try await harness.dispatcher(.telegram, port: 18371, environment: environment))
            let states = try await harness.waitUntilSettled(bulletin, timeout: .seconds(60))
            #expect(states == ["sent": 300])
            let stats = try await harness.channelStats(.telegram)
            #expect(stats.accepted == 300 && stats.duplicates == 0, "\(stats)")
            for process in processes { #expect(await harness.terminate(process) == 0) }
            await harness.stop()
        } catch {
            await harness.stop(processes)
            throw error
        }
    }

    @Test("an undecodable job goes to the dead-letter queue at once; the dispatcher carries on")
    func poisonJob() async throws {
        let harness = try await DispatchHarness.make(
            "it_dispatch_poison", simPort: 19380, simEnvironment: ["SIM_RATE_LIMITS": "false"])
        var processes: [ServiceProcess] = []
        do {
            processes.append(
                try await harness.dispatcher(.wechat, port: 18380, environment: ["DISPATCH_RATE_PER_SECOND": "0"]))
            for body in ["not json", #"{"id":"x"}"#, #"{"channel":"telegram","messages":{},"recipients":[]}"#] {
                try await harness.amqp.publishConfirmed(
                    AMQPMessage(string: body), exchange: BanditoreTopology.deliveriesExchange, routingKey: "wechat"
                )
            }
            let dead = BanditoreTopology.deadQueue(BanditoreTopology.dispatchQueue(.wechat))
            #expect(await eventually(timeout: .seconds(20)) { (try? await harness.ready(dead)) == 3 })
            let bulletin = UUID()
            let recipients = try await DeliveryFixtures.seed(
                harness.database, channel: .wechat, addresses: (0..<10).map { DeliveryFixtures.address(.wechat, $0) },
                bulletinID: bulletin
            )
            try await DeliveryFixtures.publishJobs(
                harness.amqp, channel: .wechat, recipients: recipients, bulletinID: bulletin)
            #expect(try await harness.waitUntilSettled(bulletin, timeout: .seconds(30)) == ["sent": 10])
            #expect(try await harness.ready(dead) == 3, "poison is not retried")
            let metrics = await processes[0].get("/metrics")?.body ?? ""
            #expect(metrics.contains(#"banditore_dispatch_poison_jobs_total{channel="wechat"} 3"#))
            for process in processes { #expect(await harness.terminate(process) == 0) }
            await harness.stop()
        } catch {
            await harness.stop(processes)
            throw error
        }
    }

    @Test(
        "a job that comes back after a kill publishes what its recorded failures left: the unreachable events and the dead letter"
    )
    func unfinishedEnds() async throws {
        let harness = try await DispatchHarness.make(
            "it_dispatch_ends", simPort: 19385, simEnvironment: ["SIM_RATE_LIMITS": "false"])
        var processes: [ServiceProcess] = []
        do {
            let events = TestServers.uniqueName("test.unreachable")
            try await harness.amqp.declare(
                AMQPTopology(
                    queues: [AMQPQueue(name: events)],
                    bindings: [
                        AMQPBinding(
                            queue: events, exchange: BanditoreTopology.eventsExchange,
                            routingKey: "recipient.unreachable")
                    ]
                )
            )
            let addresses = (0..<6).map { DeliveryFixtures.address(.telegram, $0) }
            let bulletin = UUID()
            let recipients = try await DeliveryFixtures.seed(
                harness.database, channel: .telegram, addresses: addresses, bulletinID: bulletin)
            // What a replica killed after its outcomes were committed, and before it published, leaves behind: two
            // blocked addresses still active, one recipient out of attempts, and one blocked address the registry
            // has deactivated already (nothing is left to do for it).
            let blocked = [addresses[0], addresses[1]]
            let left: [(String, String, kind: String, code: String?)] = [
                (addresses[0], "403: Forbidden: bot was blocked by the user", "unreachable", "403"),
                (addresses[1], "400: Bad Request: chat not found", "unreachable", "400"),
                (addresses[2], "gave up after 6 attempts: transient: 500 Internal Server Error", "gave_up", nil),
                (addresses[3], "403: Forbidden: bot was blocked by the user", "unreachable", "403"),
            ]
            for (address, error, kind, code) in left {
                try await harness.database.query(
                    """
                    UPDATE deliveries d SET state = 'failed', last_error = \(error), failure_kind = \(kind),
                                            failure_code = \(code), attempts = 1
                      FROM subscribers s
                     WHERE s.id = d.subscriber_id AND s.address = \(address) AND d.bulletin_id = \(bulletin)
                    """
                )
            }
            try await harness.database.query("UPDATE subscribers SET active = false WHERE address = \(addresses[3])")
            processes.append(
                try await harness.dispatcher(.telegram, port: 18385, environment: ["DISPATCH_RATE_PER_SECOND": "0"]))
            try await DeliveryFixtures.publishJobs(
                harness.amqp, channel: .telegram, recipients: recipients, bulletinID: bulletin)
            #expect(try await harness.waitUntilSettled(bulletin, timeout: .seconds(30)) == ["sent": 2, "failed": 4])

            let published = await eventually(timeout: .seconds(10)) { (try? await harness.ready(events)) == 2 }
            #expect(published, "two recipient.unreachable events")
            if published {
                var unreachable: [RecipientUnreachable] = []
                let consumer = try await harness.amqp.consume(queue: events)
                for try await delivery in consumer {
                    unreachable.append(try JSONDecoder().decode(RecipientUnreachable.self, from: Data(delivery.body)))
                    delivery.ack()
                    if unreachable.count == 2 { break }
                }
                consumer.cancel()
                #expect(Set(unreachable.map(\.address)) == Set(blocked))
                #expect(unreachable.allSatisfy { $0.channel == .telegram && $0.subscriberID != nil })
            }

            let dead = BanditoreTopology.deadQueue(BanditoreTopology.dispatchQueue(.telegram))
            let lettered = await eventually(timeout: .seconds(10)) { (try? await harness.ready(dead)) == 1 }
            #expect(lettered, "one dead letter")
            if lettered {
                let letters = try await harness.amqp.consume(queue: dead)
                for try await letter in letters {
                    let job = try JSONDecoder().decode(DeliveryJob.self, from: Data(letter.body))
                    #expect(job.recipients.map(\.address) == [addresses[2]])
                    letter.ack()
                    break
                }
                letters.cancel()
            }
            // Only the two queued recipients were sent anything.
            #expect(try await harness.channelStats(.telegram).accepted == 2)
            #expect(try await harness.ready(events) == 0, "no event for the recipient the registry had deactivated")
            for process in processes { #expect(await harness.terminate(process) == 0) }
            await harness.stop()
        } catch {
            await harness.stop(processes)
            throw error
        }
    }

    @Test("citizens who leave after their bulletin's jobs were queued get nothing: recorded skipped")
    func unsubscribedAfterQueueing() async throws {
        let harness = try await DispatchHarness.make(
            "it_dispatch_left", simPort: 19387, simEnvironment: ["SIM_RATE_LIMITS": "false"])
        var processes: [ServiceProcess] = []
        do {
            let addresses = (0..<10).map { DeliveryFixtures.address(.whatsapp, $0) }
            let bulletin = UUID()
            let recipients = try await DeliveryFixtures.seed(
                harness.database, channel: .whatsapp, addresses: addresses, bulletinID: bulletin)
            try await DeliveryFixtures.publishJobs(
                harness.amqp, channel: .whatsapp, recipients: recipients, bulletinID: bulletin)
            // The jobs wait in the queue; meanwhile three citizens unsubscribe (the registry marks them inactive).
            let left = Array(addresses[2..<5])
            try await harness.database.query(
                "UPDATE subscribers SET active = false, unsubscribed_at = now() WHERE address = ANY(\(left)::text[])"
            )
            processes.append(
                try await harness.dispatcher(.whatsapp, port: 18387, environment: ["DISPATCH_RATE_PER_SECOND": "0"]))
            #expect(try await harness.waitUntilSettled(bulletin, timeout: .seconds(30)) == ["sent": 7, "skipped": 3])
            let received = try await harness.simMessages(.whatsapp).map(\.recipient)
            #expect(Set(received) == Set(addresses).subtracting(left) && received.count == 7, "\(received)")
            for process in processes { #expect(await harness.terminate(process) == 0) }
            await harness.stop()
        } catch {
            await harness.stop(processes)
            throw error
        }
    }

    @Test("WeChat tokens expire mid-run with two replicas: renewed once between them, everyone sent")
    func tokenExpiry() async throws {
        let harness = try await DispatchHarness.make(
            "it_dispatch_token", simPort: 19390, simEnvironment: ["SIM_RATE_LIMITS": "false"])
        var processes: [ServiceProcess] = []
        do {
            let environment = ["DISPATCH_RATE_PER_SECOND": "200", "DISPATCH_RETRY_BACKOFF_SCALE": "0.05"]
            processes.append(try await harness.dispatcher(.wechat, port: 18390, environment: environment))
            processes.append(try await harness.dispatcher(.wechat, port: 18391, environment: environment))
            let bulletin = UUID()
            let recipients = try await DeliveryFixtures.seed(
                harness.database, channel: .wechat, addresses: (0..<800).map { DeliveryFixtures.address(.wechat, $0) },
                bulletinID: bulletin
            )
            try await DeliveryFixtures.publishJobs(
                harness.amqp, channel: .wechat, recipients: recipients, bulletinID: bulletin)
            #expect(
                await eventually(timeout: .seconds(30)) {
                    ((try? await harness.channelStats(.wechat).accepted) ?? 0) >= 200
                })
            let callsBefore = try await harness.simStats().wechatTokenCalls
            try await harness.simCall("POST", "/sim/wechat/expire")
            let states = try await harness.waitUntilSettled(bulletin, timeout: .seconds(60))
            #expect(states == ["sent": 800], "\(states)")
            let stats = try await harness.simStats()
            #expect(
                stats.wechatTokenCalls == callsBefore + 1,
                "one renewal for both replicas: \(callsBefore) → \(stats.wechatTokenCalls)")
            #expect(stats.channels["wechat"]?.duplicates == 0)
            for process in processes { #expect(await harness.terminate(process) == 0) }
            await harness.stop()
        } catch {
            await harness.stop(processes)
            throw error
        }
    }

    @Test("an urgent job overtakes the normal jobs waiting in the queue")
    func urgentFirst() async throws {
        let harness = try await DispatchHarness.make(
            "it_dispatch_urgent", simPort: 19400, simEnvironment: ["SIM_RATE_LIMITS": "false"])
        var processes: [ServiceProcess] = []
        do {
            let normal = UUID()
            let normalRecipients = try await DeliveryFixtures.seed(
                harness.database, channel: .telegram,
                addresses: (0..<400).map { DeliveryFixtures.address(.telegram, $0) },
                bulletinID: normal
            )
            try await DeliveryFixtures.publishJobs(
                harness.amqp, channel: .telegram, recipients: normalRecipients, bulletinID: normal, chunk: 20
            )
            let urgent = UUID()
            let urgentRecipients = try await DeliveryFixtures.seed(
                harness.database, channel: .telegram,
                addresses: (0..<20).map { DeliveryFixtures.address(.telegram, $0, salt: 9) }, bulletinID: urgent
            )
            try await DeliveryFixtures.publishJobs(
                harness.amqp, channel: .telegram, recipients: urgentRecipients, bulletinID: urgent, chunk: 20,
                urgent: true,
                message: .text("ALLERTA: scuole chiuse")
            )
            processes.append(
                try await harness.dispatcher(
                    .telegram, port: 18400, environment: ["DISPATCH_RATE_PER_SECOND": "100", "DISPATCH_PREFETCH": "1"]
                )
            )
            _ = try await harness.waitUntilSettled(normal, timeout: .seconds(60))
            let messages = try await harness.simMessages(.telegram)
            #expect(messages.count == 420)
            let urgentPositions = messages.enumerated().filter { $0.element.text.hasPrefix("ALLERTA") }.map(\.offset)
            #expect(urgentPositions.count == 20)
            #expect((urgentPositions.max() ?? 999) < 60, "urgent sent among the first: \(urgentPositions)")
            for process in processes { #expect(await harness.terminate(process) == 0) }
            await harness.stop()
        } catch {
            await harness.stop(processes)
            throw error
        }
    }
}
