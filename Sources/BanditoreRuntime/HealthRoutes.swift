import BanditoreAMQP
import BanditorePostgres
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

/// `/healthz` (the process answers), `/readyz` (broker and database reachable: 200, else 503 naming what is
/// down; a database that has not answered within a second counts as down, so that a probe always gets its answer)
/// and `/metrics` (Prometheus text).
enum HealthRoutes {
    static func add(to router: Router<BasicRequestContext>, context: ServiceContext) {
        let brokerUp = Gauge(label: "banditore_broker_connected")
        let databaseUp = Gauge(label: "banditore_database_reachable")
        router.get("healthz") { _, _ in "ok\n" }
        router.get("readyz") { _, _ -> Response in
            var down: [String] = []
            if let amqp = context.amqp {
                let up = amqp.isConnected
                brokerUp.record(up ? 1 : 0)
                if !up { down.append("broker") }
            }
            if let database = context.database {
                let up = await database.ping(within: .seconds(1))
                databaseUp.record(up ? 1 : 0)
                if !up { down.append("database") }
            }
            let body = down.isEmpty ? "ready\n" : "not ready: \(down.joined(separator: ", ")) unreachable\n"
            return Response(
                status: down.isEmpty ? .ok : .serviceUnavailable,
                headers: [.contentType: "text/plain; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: body))
            )
        }
        router.get("metrics") { _, _ -> Response in
            if let amqp = context.amqp { brokerUp.record(amqp.isConnected ? 1 : 0) }
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: context.metrics.emitToBuffer()))
            )
        }
    }
}

/// Reads the ready messages and consumers of a service's queues from the broker (a passive declare each) every
/// few seconds into `banditore_queue_messages{queue}` and `banditore_queue_consumers{queue}`: what an operator
/// scales dispatchers on. In the background, so that a scrape never waits on the broker, and on a connection of its
/// own: rabbitmq-c reads whatever arrives while it waits for an RPC's answer, and on the consuming connection those
/// reads starved the consumer (its heartbeat watch once gave the connection up). While the broker is away the last
/// values stay and `banditore_broker_connected` says why.
struct QueueDepthSampler: Service {
    static let interval = Duration.seconds(5)
    let configuration: AMQPConfiguration
    let queues: [String]
    let logger: Logger

    func run() async throws {
        let gauges = queues.map { queue in
            (
                name: queue, messages: Gauge(label: "banditore_queue_messages", dimensions: [("queue", queue)]),
                consumers: Gauge(label: "banditore_queue_consumers", dimensions: [("queue", queue)])
            )
        }
        await cancelWhenGracefulShutdown {
            guard let amqp = try? await ServiceRunner.connectWithRetry(configuration, logger: logger) else { return }
            while !Task.isCancelled {
                for queue in gauges where amqp.isConnected {
                    guard let info = try? await amqp.inspectQueue(queue.name) else { continue }
                    queue.messages.record(info.messageCount)
                    queue.consumers.record(info.consumerCount)
                }
                try? await Task.sleep(for: Self.interval)
            }
            await amqp.close()
        }
    }
}
