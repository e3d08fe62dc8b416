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

/// An urgent bulletin posted while a normal one is going out, through running dispatchers and a simulator with
/// the providers' real limits: how soon its first and last sends reach the provider after the post, its share of
/// the channel while it runs, the attempts the provider refused for its rate or a recipient's pace, and the rate
/// achieved as a share of the channel's limit.
struct Urgent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "An urgent bulletin overtaking a normal one on real limits: timing, share, refusals, rate."
    )
    @Option var amqpURL: String
    @Option var databaseURL: String
    @Option var simURL: String
    @Option(help: "Channels, comma separated.") var channels = "telegram,whatsapp"
    @Option(help: "Recipients of the normal bulletin per channel (0: none).") var normal = 2_000
    @Option(help: "Recipients of the urgent bulletin per channel.") var urgent = 1_000
    @Option(help: "Seconds between the normal bulletin's jobs and the urgent one's.") var delay = 3.0
    @Option(help: "The channels' limits, as `telegram:30,whatsapp:80` (the urgent rate when it has its own).")
    var limits = "telegram:30,whatsapp:80,wechat:0"
    @Option(help: "Distinguishes this run's addresses from earlier runs'.") var salt =
        Int(Date().timeIntervalSince1970) % 1000

    func run() async throws {
        let selected = channels.split(separator: ",").compactMap { Channel(rawValue: String($0)) }
        var limit: [Channel: Double] = [:]
        for item in limits.split(separator: ",") {
            let parts = item.split(separator: ":")
            if parts.count == 2, let channel = Channel(rawValue: String(parts[0])), let value = Double(parts[1]) {
                limit[channel] = value
            }
        }
        let database = try DatabasePool(url: databaseURL, logger: logger)
        let amqp = try await AMQPConnection.connect(url: amqpURL, logger: logger)
        let sim = SimClient(base: simURL)
        let before = try await sim.stats()
        var normalBulletins: [Channel: UUID] = [:]
        var urgentBulletins: [Channel: UUID] = [:]
        var urgentAddresses: [Channel: Set<String>] = [:]
        var normalJobs: [DeliveryFixtures.EncodedJob] = []
        var urgentJobs: [DeliveryFixtures.EncodedJob] = []
        for channel in selected {
            if normal > 0 {
                let bulletin = UUID()
                normalBulletins[channel] = bulletin
                let recipients = try await DeliveryFixtures.seed(
                    database, channel: channel,
                    addresses: (0..<normal).map { DeliveryFixtures.address(channel, $0, salt: salt * 2) },
                    bulletinID: bulletin
                )
                normalJobs += DeliveryFixtures.encodeJobs(
                    channel: channel, recipients: recipients, bulletinID: bulletin, chunk: 500,
                    message: DeliveryFixtures.message(channel, text: "Farmacia di turno: via Roma 1")
                )
            }
            let bulletin = UUID()
            urgentBulletins[channel] = bulletin
            let addresses = (0..<urgent).map { DeliveryFixtures.address(channel, $0, salt: salt * 2 + 1) }
            urgentAddresses[channel] = Set(addresses)
            let recipients = try await DeliveryFixtures.seed(
                database, channel: channel, addresses: addresses, bulletinID: bulletin)
            urgentJobs += DeliveryFixtures.encodeJobs(
                channel: channel, recipients: recipients, bulletinID: bulletin, chunk: 500, urgent: true,
                message: DeliveryFixtures.message(channel, text: "Allerta meteo: scuole chiuse")
            )
        }
        let after = try await sim.lastSeq()
        try await DeliveryFixtures.publish(amqp, normalJobs)
        if !normalJobs.isEmpty { try await Task.sleep(for: .seconds(delay)) }
        let posted = Date()
        try await DeliveryFixtures.publish(amqp, urgentJobs)
        let bulletins = Array(normalBulletins.values) + Array(urgentBulletins.values)
        while try await database.query(
            "SELECT count(*) FROM deliveries WHERE bulletin_id = ANY(\(bulletins)::uuid[]) AND state = 'queued'"
        ).first!.decode(Int.self, at: 0) > 0 {
            try await Task.sleep(for: .milliseconds(500))
        }
        try await Task.sleep(for: .milliseconds(300))
        let messages = try await sim.messages(after: after)
        let stats = try await sim.stats()
        for channel in selected {
            let name = channel.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)
            let mine = messages.filter { $0.channel == channel.rawValue }
            let isUrgent = { (m: SimClient.Message) in urgentAddresses[channel]!.contains(m.recipient) }
            let urgentTimes = mine.filter(isUrgent).map(\.acceptedAt).sorted()
            guard let first = urgentTimes.first, let last = urgentTimes.last else {
                print("\(name) no urgent send reached the provider")
                continue
            }
            let during = mine.filter { $0.acceptedAt >= first && $0.acceptedAt <= last }
            let share = Double(during.filter(isUrgent).count) / Double(max(during.count, 1))
            let urgentRate = Double(urgentTimes.count - 1) / max(last.timeIntervalSince(first), 0.001)
            let all = mine.map(\.acceptedAt).sorted()
            let overall = Double(all.count - 1) / max(all.last!.timeIntervalSince(all.first!), 0.001)
            let now = stats[channel.rawValue] ?? .init()
            let was = before[channel.rawValue] ?? .init()
            let accepted = now.accepted - was.accepted
            let refused = now.throttled - was.throttled
            let attempts = accepted + refused
            print(
                "\(name) urgent \(urgentTimes.count): first send "
                    + String(format: "%.2f", first.timeIntervalSince(posted))
                    + " s after the post, last " + String(format: "%.1f", last.timeIntervalSince(posted)) + " s; "
                    + String(format: "%.1f", share * 100) + "% of the channel's sends while it ran, at "
                    + String(format: "%.1f", urgentRate) + "/s"
                    + (limit[channel].map {
                        $0 > 0 ? String(format: " (%.1f%% of %.0f/s)", urgentRate / $0 * 100, $0) : ""
                    } ?? "")
            )
            // The provider's view, second by second from the first urgent send: a slow second shows a stall.
            var perSecond: [Int: Int] = [:]
            for time in urgentTimes { perSecond[Int(time.timeIntervalSince(first)), default: 0] += 1 }
            let whole = perSecond.filter { $0.key < Int(last.timeIntervalSince(first)) }.sorted { $0.key < $1.key }.map(
                \.value)
            if !whole.isEmpty {
                print("\(name) urgent sends per whole second: " + whole.map(String.init).joined(separator: " "))
            }
            print(
                "\(name) all \(all.count) sends at " + String(format: "%.1f", overall) + "/s"
                    + (limit[channel].map {
                        $0 > 0 ? String(format: " = %.1f%% of %.0f/s", overall / $0 * 100, $0) : ""
                    } ?? "")
                    + "; refused for rate or pace: \(refused) of \(attempts) attempts ("
                    + String(format: "%.2f", Double(refused) / Double(max(attempts, 1)) * 100) + "%), duplicates "
                    + "\(now.duplicates - was.duplicates)"
            )
        }
        await amqp.close()
        await database.close()
    }
}

/// The simulator's records and counters over HTTP.
struct SimClient {
    struct Message: Decodable {
        var seq: Int
        var channel: String
        var recipient: String
        var acceptedAt: Date
    }
    struct ChannelStats: Decodable {
        var accepted = 0
        var throttled = 0
        var duplicates = 0
        init() {}
    }
    let base: String

    private func get(_ path: String) async throws -> Data {
        let (data, _) = try await URLSession.shared.data(from: URL(string: base + path)!)
        return data
    }

    func stats() async throws -> [String: ChannelStats] {
        struct Stats: Decodable { var channels: [String: ChannelStats] }
        return try SimulatorRecords.decoder.decode(Stats.self, from: try await get("/sim/stats")).channels
    }

    func lastSeq() async throws -> Int {
        try await messages(after: 0).last?.seq ?? 0
    }

    /// Every message accepted after `after`, in order.
    func messages(after: Int) async throws -> [Message] {
        try await SimulatorRecords.messages(after: after, seq: \.seq) { try await get($0) }
    }
}
