import BanditoreAMQP
import BanditorePostgres
import Hummingbird
import Metrics
import Prometheus

/// `/healthz` (the process answers), `/readyz` (broker and database reachable: 200, else 503 naming what is
/// down) and `/metrics` (Prometheus text, with the depth of the service's queues read from the broker at each
/// scrape: what an operator scales dispatchers on).
enum HealthRoutes {
    static func add(to router: Router<BasicRequestContext>, context: ServiceContext, queues: [String] = []) {
        let depth = queues.map { queue in
            (
                name: queue, messages: Gauge(label: "banditore_queue_messages", dimensions: [("queue", queue)]),
                consumers: Gauge(label: "banditore_queue_consumers", dimensions: [("queue", queue)])
            )
        }
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
                let up = await database.ping()
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
            if let amqp = context.amqp {
                brokerUp.record(amqp.isConnected ? 1 : 0)
                for queue in depth {
                    // While the broker is away the last values stay, and banditore_broker_connected says why.
                    guard amqp.isConnected, let info = try? await amqp.inspectQueue(queue.name) else { continue }
                    queue.messages.record(info.messageCount)
                    queue.consumers.record(info.consumerCount)
                }
            }
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: context.metrics.emitToBuffer()))
            )
        }
    }
}
