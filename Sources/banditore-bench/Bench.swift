import ArgumentParser
import BanditoreAMQP
import BanditoreCore
import BanditorePostgres
import BanditoreTesting
import Foundation
import Logging

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Measures the AMQP and PostgreSQL modules; `scripts/bench` runs it beside the plain C and psql baselines.
/// Each subcommand prints one rate (items per second) on standard output.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "banditore-bench",
        abstract: "Throughput of Banditore's AMQP and PostgreSQL modules.",
        subcommands: [
            Publish.self, Consume.self, DeleteQueues.self, Copy.self, Stream.self, Dispatch.self, Urgent.self,
            Codecs.self,
        ]
    )
}

let logger = Logger(label: "bench")

private func rate(_ count: Int, since start: ContinuousClock.Instant) -> String {
    let elapsed = ContinuousClock.now - start
    let seconds = elapsed.inSeconds
    return String(format: "%.0f", Double(count) / seconds)
}

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Publish persistent messages under confirms.")
    @Option var url: String
    @Option var queue: String
    @Option var count = 100_000
    @Option var size = 200
    @Option(help: "Wait for confirms every N messages (0: only at the end, with up to 10,000 in flight).")
    var confirmEvery = 1_000

    func run() async throws {
        let connection = try await AMQPConnection.connect(url: url, logger: logger)
        try await connection.declare(AMQPTopology(queues: [AMQPQueue(name: queue)]))
        let message = AMQPMessage(
            body: [UInt8](repeating: UInt8(ascii: "x"), count: size),
            properties: AMQPProperties(contentType: "application/json")
        )
        let start = ContinuousClock.now
        for i in 1...count {
            try await connection.publish(message, exchange: "", routingKey: queue, mandatory: false)
            if confirmEvery > 0, i % confirmEvery == 0 { try await connection.waitForConfirms() }
        }
        try await connection.waitForConfirms()
        print(rate(count, since: start))
        await connection.close()
    }
}

struct Consume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Consume with prefetch 500, a multiple-ack every 100.")
    @Option var url: String
    @Option var queue: String
    @Option var count = 100_000

    func run() async throws {
        let connection = try await AMQPConnection.connect(url: url, logger: logger)
        let consumer = try await connection.consume(queue: queue, prefetch: 500)
        let start = ContinuousClock.now
        var received = 0
        for try await delivery in consumer {
            received += 1
            if received % 100 == 0 || received == count { delivery.ack(multiple: true) }
            if received == count { break }
        }
        print(rate(received, since: start))
        consumer.cancel()
        await connection.close()
    }
}

struct DeleteQueues: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete the benchmark's queues.")
    @Option var url: String
    @Argument var queues: [String]

    func run() async throws {
        let connection = try await AMQPConnection.connect(url: url, logger: logger)
        for queue in queues { try await connection.deleteQueue(queue) }
        await connection.close()
    }
}

struct Copy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "COPY rows (id, 32-character text) into a table.")
    @Option var url: String
    @Option var table: String
    @Option var count = 1_000_000

    func run() async throws {
        let connection = try await DatabaseConnection.connect(DatabaseConfiguration(url: url), logger: logger)
        let rows = (1...count).lazy.map { i -> [(any SQLEncodable)?] in [i, Self.text(i)] }
        let start = ContinuousClock.now
        let copied = try await connection.copy(into: table, columns: ["id", "label"], rows: rows)
        print(rate(copied, since: start))
        await connection.close()
    }

    /// The same 32 characters per row as the psql baseline's file.
    static func text(_ i: Int) -> String {
        let s = String(i)
        return String(repeating: "0", count: 32 - s.count) + s
    }
}

struct Stream: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stream rows of a query, decoding each.")
    @Option var url: String
    @Option var count = 1_000_000

    func run() async throws {
        let connection = try await DatabaseConnection.connect(DatabaseConfiguration(url: url), logger: logger)
        let start = ContinuousClock.now
        var seen = 0
        try await connection.withRows(
            "SELECT g, md5(g::text) FROM generate_series(1, \(count)) AS g", batchSize: 2_000
        ) { rows in
            for try await row in rows {
                _ = try row.decode(Int.self, String.self)
                seen += 1
            }
        }
        print(rate(seen, since: start))
        await connection.close()
    }
}

struct Dispatch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "End-to-end deliveries per second through running dispatchers: seeds queued deliveries, publishes "
            + "their jobs, and waits until every delivery is sent. Prints one line per channel and a total."
    )
    @Option var amqpURL: String
    @Option var databaseURL: String
    @Option(help: "Recipients per channel.") var recipients = 20_000
    @Option(help: "Channels, comma separated.") var channels = "whatsapp,telegram,wechat"
    @Option(help: "Recipients per job.") var chunk = 500
    @Option(
        help:
            "A dispatcher's /metrics URL (repeat for each replica): its committed-status counter tells when to check the database."
    )
    var metricsURL: [String] = []
    @Option(help: "Distinguishes this run's addresses from earlier runs'.") var salt =
        Int(Date().timeIntervalSince1970) % 1000

    func run() async throws {
        let selected = channels.split(separator: ",").compactMap { Channel(rawValue: String($0)) }
        let database = try DatabasePool(url: databaseURL, logger: logger)
        let amqp = try await AMQPConnection.connect(url: amqpURL, logger: logger)
        var bulletins: [Channel: UUID] = [:]
        var seeded: [Channel: [Recipient]] = [:]
        for channel in selected {
            let bulletin = UUID()
            bulletins[channel] = bulletin
            seeded[channel] = try await DeliveryFixtures.seed(
                database, channel: channel,
                addresses: (0..<recipients).map { DeliveryFixtures.address(channel, $0, salt: salt) },
                bulletinID: bulletin
            )
        }
        // Done when every delivery is recorded. The dispatchers' committed-status counters tell when to look (a
        // query over the bulletin's deliveries every few milliseconds would load the database being measured);
        // the database then confirms that none is left queued, and its clock says when the last status was written
        // (`updated_at`, the status transaction's start), so that looking twice a second costs no precision and
        // the harness takes next to nothing of the cores being measured.
        func written() async -> [Channel: Int] {
            var total: [Channel: Int] = [:]
            for url in metricsURL {
                guard let url = URL(string: url), let (data, _) = try? await URLSession.shared.data(from: url) else {
                    continue
                }
                for line in String(decoding: data, as: UTF8.self).split(separator: "\n")
                where line.hasPrefix("banditore_dispatch_statuses_written_total{") {
                    for channel in selected where line.contains("channel=\"\(channel.rawValue)\"") {
                        total[channel, default: 0] += Int(Double(line.split(separator: " ").last ?? "") ?? 0)
                    }
                }
            }
            return total
        }
        // When the channel's last status was written, once none of its deliveries is left queued (one pass).
        func lastStatus(_ channel: Channel) async throws -> Double? {
            try await database.query(
                """
                SELECT extract(epoch FROM max(updated_at))::float8 FROM deliveries
                 WHERE bulletin_id = \(bulletins[channel]!) AND channel = \(channel.rawValue)
                HAVING NOT bool_or(state = 'queued')
                """
            ).first?.decode(Double.self, at: 0)
        }
        // Encoded before the clock starts: the harness's JSON encoding would otherwise take the dispatchers' cores.
        let jobs = selected.flatMap { channel in
            DeliveryFixtures.encodeJobs(
                channel: channel, recipients: seeded[channel]!, bulletinID: bulletins[channel], chunk: chunk
            )
        }
        let baseline = await written()
        let start = try await database.query("SELECT extract(epoch FROM clock_timestamp())::float8").first!
            .decode(Double.self, at: 0)
        try await DeliveryFixtures.publish(amqp, jobs)
        var finished: [Channel: Double] = [:]
        while finished.count < selected.count {
            try await Task.sleep(for: .milliseconds(500))
            let now = await written()
            for channel in selected where finished[channel] == nil {
                let caughtUp = now[channel, default: 0] - baseline[channel, default: 0] >= recipients
                if metricsURL.isEmpty || caughtUp, let last = try await lastStatus(channel) {
                    finished[channel] = last - start
                }
            }
        }
        for channel in selected {
            let sent = try await database.query(
                "SELECT count(*) FROM deliveries WHERE bulletin_id = \(bulletins[channel]!) AND state = 'sent'"
            ).first!.decode(Int.self, at: 0)
            let name = channel.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)
            print(
                name
                    + String(
                        format: " %7d sent in %6.2f s: %8.0f/s", sent, finished[channel]!,
                        Double(sent) / finished[channel]!))
        }
        let total = finished.values.max()!
        print(
            String(
                format: "total     %7d sent in %6.2f s: %8.0f/s", recipients * selected.count, total,
                Double(recipients * selected.count) / total))
        await amqp.close()
        await database.close()
    }
}

struct Codecs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "CPU time per delivery job read (500 recipients) and per citizen's command written and read, Foundation's codecs against ours."
    )
    @Option var rounds = 2_000

    func run() throws {
        let job = DeliveryJob(
            bulletinID: UUID(), channel: .telegram,
            messages: [
                .italian: .text("Farmacie di turno: Farmacia Centrale, via Roma 1, aperta fino alle 22."),
                .chinese: .text("值班药房：中央药房，罗马路1号，营业至22点。"),
                .english: .text("Pharmacies on duty: Central Pharmacy, via Roma 1, open until 10 pm."),
            ],
            recipients: (0..<500).map {
                Recipient(
                    deliveryID: 10_000_000 + Int64($0), subscriberID: Int64($0), address: String(700_000_000 + $0),
                    language: Language.allCases[$0 % 3]
                )
            },
            correlationID: UUID().uuidString
        )
        let body = job.json()
        let command = CitizenCommand(
            channel: .telegram, address: "123456789", kind: .subscribe, dedupeKey: "telegram:900000001",
            reportedLanguage: .italian, text: "ATTIVA ISCRIZIONE"
        )
        var sink = 0
        func measure(_ name: String, _ work: () throws -> Int) rethrows {
            for _ in 0..<rounds / 10 { sink &+= try work() }  // warm up
            let start = ContinuousClock.now
            for _ in 0..<rounds { sink &+= try work() }
            let micros = (ContinuousClock.now - start).inSeconds * 1e6 / Double(rounds)
            print(name.padding(toLength: 46, withPad: " ", startingAt: 0) + String(format: "%9.2f µs", micros))
        }
        try measure("job read, JSONDecoder") {
            try JSONDecoder().decode(DeliveryJob.self, from: Data(body)).recipients.count
        }
        try measure("job read, DeliveryJob(json:)") { try DeliveryJob(json: body).recipients.count }
        try measure("command written, JSONEncoder") { try JSONEncoder().encode(command).count }
        measure("command written, CitizenCommand.json()") { command.json().count }
        let written = command.json()
        try measure("command read, JSONDecoder") {
            try JSONDecoder().decode(CitizenCommand.self, from: Data(written)).text?.count ?? 0
        }
        try measure("command read, CitizenCommand(json:)") { try CitizenCommand(json: written).text?.count ?? 0 }
        if sink == 42 { print("") }
    }
}
