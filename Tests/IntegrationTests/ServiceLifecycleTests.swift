import BanditoreAMQP
import BanditoreRuntime
import BanditoreTesting
import Foundation
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

private let services: [(name: String, port: Int)] = [
    ("banditore-ingest", 18080),
    ("banditore-registry", 18081),
    ("banditore-composer", 18082),
    ("banditore-dispatch-whatsapp", 18083),
    ("banditore-dispatch-telegram", 18084),
    ("banditore-dispatch-wechat", 18085),
    ("banditore-provider-sim", 18090),
]

@Suite("Every service starts, reports health, and stops cleanly on SIGTERM")
struct ServiceLifecycleTests {
    @Test("start, /healthz, /readyz, /metrics, SIGTERM → exit 0", arguments: services)
    func lifecycle(service: (name: String, port: Int)) async throws {
        let environment = [
            "AMQP_URL": try TestServers.amqpURL(),
            "DATABASE_URL": try TestServers.databaseURL(),
        ]
        let process = try ServiceProcess.start(service.name, port: service.port, environment: environment)
        let healthy = await eventually(timeout: .seconds(30), every: .milliseconds(100)) {
            await process.get("/healthz")?.status == 200
        }
        guard healthy else {
            process.signal(SIGKILL)
            _ = await process.waitForExit()
            Issue.record("\(service.name) never answered /healthz; log:\n\(process.log)")
            return
        }
        // Readiness may take a moment after start (a first database connection on a loaded machine), but every probe
        // gets its answer: a database slow to answer is a 503 within the probe's 2 s, never silence.
        let unanswered = Count()
        let ready = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
            let answer = await process.get("/readyz")
            if answer == nil { unanswered.add() }
            return answer?.status == 200
        }
        #expect(ready, "never ready; log:\n\(process.log.suffix(3000))")
        #expect(unanswered.count == 0, "/readyz went unanswered \(unanswered.count) times")
        let metrics = await process.get("/metrics")
        #expect(metrics?.status == 200)
        #expect(process.log.contains(#""msg":"starting""#), "JSON logs")

        process.signal(SIGTERM)
        let status = await process.waitForExit()
        #expect(status == 0, "exit status after SIGTERM; log:\n\(process.log)")
        #expect(process.log.contains(#""msg":"stopped""#))
    }

    @Test("a dispatcher's /metrics reports the depth and consumers of its queues, sampled from the broker")
    func queueDepth() async throws {
        let servers = try await IsolatedServers.make("it_queue_depth")
        let process = try ServiceProcess.start(
            "banditore-dispatch-wechat", port: 18183,
            environment: ["AMQP_URL": servers.amqpURL, "DATABASE_URL": servers.databaseURL, "MIGRATE_ON_START": "true"]
        )
        defer { process.signal(SIGKILL) }  // only if it is still running
        #expect(await eventually(timeout: .seconds(30)) { await process.get("/readyz")?.status == 200 })
        let connection = try await AMQPConnection.connect(url: servers.amqpURL, logger: Logger(label: "test.depth"))
        // Three jobs waiting out the longest retry delay (ten minutes): they stay in that queue.
        for _ in 0..<3 {
            try await connection.publishConfirmed(
                AMQPMessage(string: "{}"), exchange: BanditoreTopology.retryExchange, routingKey: "wechat.4"
            )
        }
        func value(_ metrics: String, _ name: String, queue: String) -> Double? {
            let prefix = "\(name){queue=\"\(queue)\"} "
            return metrics.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap {
                Double($0.dropFirst(prefix.count))
            }
        }
        // Sampled every 5 s in the background.
        var metrics = ""
        let sampled = await eventually(timeout: .seconds(30), every: .milliseconds(500)) {
            metrics = await process.get("/metrics")?.body ?? ""
            return value(metrics, "banditore_queue_messages", queue: "dispatch.wechat.retry.4") == 3
        }
        #expect(sampled, "\(metrics)")
        #expect(value(metrics, "banditore_queue_messages", queue: "dispatch.wechat") == 0)
        #expect(value(metrics, "banditore_queue_messages", queue: "dispatch.wechat.dead") == 0)
        #expect(value(metrics, "banditore_queue_consumers", queue: "dispatch.wechat") == 1)
        #expect(value(metrics, "banditore_queue_messages", queue: "dispatch.telegram") == nil, "only its own queues")
        await connection.close()
        process.signal(SIGTERM)
        #expect(await process.waitForExit() == 0)
    }

    @Test("on a fresh broker, a service declares every queue of the topology at start")
    func topologyDeclared() async throws {
        try await PrivateServer.with(.rabbitmq, portBase: 5793) { broker in
            let connection = try await AMQPConnection.connect(url: broker.url, logger: Logger(label: "test.topology"))
            let topology = BanditoreTopology.all
            for queue in topology.queues {
                await #expect(throws: AMQPError.self) { try await connection.inspectQueue(queue.name) }
            }
            let process = try ServiceProcess.start(
                "banditore-composer", port: 18182,
                environment: ["AMQP_URL": broker.url, "DATABASE_URL": try TestServers.databaseURL()]
            )
            defer { process.signal(SIGKILL) }  // only if it is still running
            #expect(await eventually(timeout: .seconds(30)) { await process.get("/healthz")?.status == 200 })
            for queue in topology.queues {
                let info = try await connection.inspectQueue(queue.name)
                #expect(info.messageCount == 0, "\(queue.name)")
            }
            // registry.commands is a quorum queue: declaring it as a classic one is refused, the command stays.
            var classic = try #require(topology.queues.first { $0.name == BanditoreTopology.registryCommands })
            #expect(classic.type == .quorum)
            classic.type = .classic
            try await connection.publishConfirmed(
                AMQPMessage(string: "{}"), exchange: "", routingKey: BanditoreTopology.registryCommands
            )
            await #expect {
                try await connection.declare(AMQPTopology(queues: [classic]))
            } throws: { error in
                let detail = (error as? AMQPError)?.detail ?? ""
                return detail.contains("x-queue-type")
            }
            #expect(try await connection.inspectQueue(BanditoreTopology.registryCommands).messageCount == 1)
            #expect(try await connection.purgeQueue(BanditoreTopology.registryCommands) == 1)
            process.signal(SIGTERM)
            #expect(await process.waitForExit() == 0)
            await connection.close()
        }
    }
}

@Suite("Readiness follows the broker", .serialized)
struct ReadinessTests {
    @Test("/readyz answers 503 while the broker is down and 200 once it is back; the service keeps running")
    func readinessFollowsBroker() async throws {
        try await PrivateServer.with(.rabbitmq, portBase: 5792) { broker in
            let process = try ServiceProcess.start(
                "banditore-registry", port: 18181,
                environment: ["AMQP_URL": broker.url, "DATABASE_URL": try TestServers.databaseURL()]
            )
            defer { process.signal(SIGKILL) }  // only if it is still running
            #expect(await eventually(timeout: .seconds(30)) { await process.get("/readyz")?.status == 200 })
            try await broker.stop()
            #expect(await eventually(timeout: .seconds(20)) { await process.get("/readyz")?.status == 503 })
            #expect(await process.get("/readyz")?.body.contains("broker") == true)
            #expect(await process.get("/healthz")?.status == 200)
            try await broker.start()
            #expect(await eventually(timeout: .seconds(30)) { await process.get("/readyz")?.status == 200 })
            process.signal(SIGTERM)
            #expect(await process.waitForExit() == 0)
        }
    }
}

private final class Count: Sendable {
    private let value = Mutex(0)
    func add() { value.withLock { $0 += 1 } }
    var count: Int { value.withLock { $0 } }
}
