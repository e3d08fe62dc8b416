import BanditoreAMQP
import BanditoreCore
import BanditorePostgres
import BanditoreProviderSim
import BanditoreRuntime
import BanditoreStore
import BanditoreTesting
import Foundation
import Logging
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
#if canImport(Glibc)
    import Glibc
#endif

/// A vhost and a database of the test's own, the topology and schema in them, a `banditore-provider-sim`
/// process, and the dispatcher processes the test starts.
final class DispatchHarness: Sendable {
    let servers: IsolatedServers
    let database: DatabasePool
    let amqp: AMQPConnection
    let sim: ServiceProcess
    let logger = Logger(label: "test.dispatch")

    private init(servers: IsolatedServers, database: DatabasePool, amqp: AMQPConnection, sim: ServiceProcess) {
        self.servers = servers
        self.database = database
        self.amqp = amqp
        self.sim = sim
    }

    static func make(_ name: String, simPort: Int, simEnvironment: [String: String] = [:]) async throws
        -> DispatchHarness
    {
        let servers = try await IsolatedServers.make(name)
        let logger = Logger(label: "test.dispatch")
        let database = try DatabasePool(url: servers.databaseURL, logger: logger)
        _ = try await Migrator(logger: logger).migrate(database)
        let amqp = try await AMQPConnection.connect(url: servers.amqpURL, logger: logger)
        try await amqp.declare(BanditoreTopology.all)
        var environment = ["SIM_STATUS_WEBHOOKS": "false", "LOG_LEVEL": "warning"]
        for (key, value) in simEnvironment { environment[key] = value }
        let sim = try ServiceProcess.start("banditore-provider-sim", port: simPort, environment: environment)
        let harness = DispatchHarness(servers: servers, database: database, amqp: amqp, sim: sim)
        guard await eventually(timeout: .seconds(30), { await sim.get("/healthz")?.status == 200 }) else {
            await harness.stop()
            throw HarnessError(description: "the simulator did not start; log:\n\(sim.log)")
        }
        return harness
    }

    struct HarnessError: Error, CustomStringConvertible {
        let description: String
    }

    var simURL: String { "http://127.0.0.1:\(sim.port)" }

    /// Starts `banditore-dispatch-<channel>` against this harness and waits until it answers. Its provider timeout
    /// is 30 s unless `environment` says otherwise: a loaded test machine can stall a process for seconds, and a
    /// request that timed out after the simulator took it is sent again (as it must be: the dispatcher cannot know).
    func dispatcher(_ channel: Channel, port: Int, environment: [String: String] = [:]) async throws -> ServiceProcess {
        try await service(
            "banditore-dispatch-\(channel.rawValue)", port: port,
            environment: ["DISPATCH_REQUEST_TIMEOUT_SECONDS": "30"].merging(environment) { $1 }
        )
    }

    /// Starts a Banditore service against this harness (its vhost, database and simulator) and waits until it
    /// answers.
    func service(_ executable: String, port: Int, environment: [String: String] = [:]) async throws -> ServiceProcess {
        var env = [
            "AMQP_URL": servers.amqpURL, "DATABASE_URL": servers.databaseURL,
            "WHATSAPP_API_URL": simURL, "TELEGRAM_API_URL": simURL, "WECHAT_API_URL": simURL,
            "LOG_LEVEL": "info",
        ]
        for (key, value) in environment { env[key] = value }
        let process = try ServiceProcess.start(executable, port: port, environment: env)
        guard await eventually(timeout: .seconds(30), { await process.get("/healthz")?.status == 200 }) else {
            process.signal(SIGKILL)
            _ = await process.waitForExit()
            throw HarnessError(description: "\(executable) did not start; log:\n\(process.log)")
        }
        return process
    }

    /// Stops a dispatcher with SIGTERM and returns its exit status.
    func terminate(_ process: ServiceProcess) async -> Int32 {
        process.signal(SIGTERM)
        return await process.waitForExit()
    }

    func stop(_ processes: [ServiceProcess] = []) async {
        for process in processes { process.signal(SIGKILL) }
        for process in processes { _ = await process.waitForExit() }
        sim.signal(SIGKILL)
        _ = await sim.waitForExit()
        await amqp.close()
        await database.close()
    }

    // MARK: The simulator

    func simStats() async throws -> ProviderSimulator.Stats {
        let data = try await simCall("GET", "/sim/stats")
        return try JSONDecoder.sim.decode(ProviderSimulator.Stats.self, from: data)
    }

    func channelStats(_ channel: Channel) async throws -> ChannelStats {
        try await simStats().channels[channel.rawValue]!
    }

    /// Every message the simulator accepted on `channel`, in order.
    func simMessages(_ channel: Channel) async throws -> [RecordedMessage] {
        try await SimulatorRecords.messages(channel: channel.rawValue, seq: \.seq) { try await simCall("GET", $0) }
    }

    func simSettings(_ json: String) async throws {
        _ = try await simCall("PUT", "/sim/settings", body: json)
    }

    /// `timeout` is how long the answer may take: playing many citizens answers only once they all have, which on a
    /// loaded machine (the whole suite runs at once) can take minutes.
    @discardableResult
    func simCall(_ method: String, _ path: String, body: String? = nil, timeout: TimeInterval = 30) async throws -> Data
    {
        var request = URLRequest(url: URL(string: simURL + path)!)
        request.httpMethod = method
        request.timeoutInterval = timeout
        if let body {
            request.httpBody = Data(body.utf8)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            throw HarnessError(description: "\(method) \(path) → \(status): \(String(decoding: data, as: UTF8.self))")
        }
        return data
    }

    // MARK: The database

    /// Deliveries of a bulletin by state.
    func states(_ bulletin: UUID) async throws -> [String: Int] {
        var out: [String: Int] = [:]
        for row in try await database.query(
            "SELECT state, count(*) FROM deliveries WHERE bulletin_id = \(bulletin) GROUP BY state"
        ).rows {
            let (state, count) = try row.decode(String.self, Int.self)
            out[state] = count
        }
        return out
    }

    /// Waits until no delivery of the bulletin is `queued` (or the timeout passes); returns the states.
    func waitUntilSettled(_ bulletin: UUID, timeout: Duration) async throws -> [String: Int] {
        _ = try await eventually(timeout: timeout, every: .milliseconds(200)) {
            try await self.states(bulletin)["queued", default: 0] == 0
        }
        return try await states(bulletin)
    }

    /// Messages ready in a queue.
    func ready(_ queue: String) async throws -> Int {
        try await amqp.inspectQueue(queue).messageCount
    }
}

extension JSONDecoder {
    static var sim: JSONDecoder { SimulatorRecords.decoder }
}

/// The value of one series in a Prometheus text page (`name{labels}` as written there), or nil when it is absent.
func metricValue(_ page: String, _ series: String) -> Double? {
    page.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { $0.split(separator: " ").last }
        .flatMap { Double($0) }
}
