import BanditoreChannels
import BanditoreCore
import BanditorePostgres
import BanditoreStore
import BanditoreTesting
import Foundation
import Logging
import Synchronization
import Testing

@testable import BanditoreDispatch

/// Timing: measured alone (scripts/test runs suites named `…TimingTests` after the others, one at a time), since
/// a loaded machine delays the tasks that ask for slots.
@Suite("Rate-limit schedule timing")
struct RateLimitTimingTests {
    let logger = Logger(label: "test.dispatch.timing")

    @Test(
        "three replicas leasing one 40/s limit: the slots they get never exceed it in any second, and use ≥ 95% of it")
    func rateLimitAcrossReplicas() async throws {
        let client = try await IsolatedServers.make("it_rate_slots").migratedDatabase(logger: logger)
        let configuration = SharedRateLimiter.Configuration(key: "telegram", ratePerSecond: 40, headroom: 0)
        // Separate clients: three replicas, each with its own connections.
        var replicas: [SharedRateLimiter] = []
        for _ in 0..<3 {
            replicas.append(
                SharedRateLimiter(
                    configuration: configuration,
                    database: try DatabasePool(url: client.configuration.url, logger: logger),
                    logger: logger
                )
            )
        }
        let slots = Slots()
        let clock = ContinuousClock()
        let end = clock.now + .seconds(3)
        await withThrowingTaskGroup { group in
            for replica in replicas {
                for _ in 0..<8 {  // each replica has several senders asking at once
                    group.addTask {
                        while clock.now < end {
                            let slot = try await replica.acquire()
                            slots.append(slot)
                        }
                    }
                }
            }
        }
        let sorted = slots.all.sorted()
        // The schedule itself, not when tasks woke: in every window of one second, at most 40 slots (+1 for both
        // window ends falling on slots).
        var busiest = 0
        var j = 0
        for i in sorted.indices {
            while sorted[j] < sorted[i] - .seconds(1) + .microseconds(1) { j += 1 }
            busiest = max(busiest, i - j + 1)
        }
        #expect(busiest <= 41, "busiest second: \(busiest)")
        let rate = Double(sorted.count - 1) / (sorted.last! - sorted.first!).inSeconds
        #expect(rate >= 38 && rate <= 40.5, "rate \(rate)")
        // Slots are spread evenly: none closer than the interval allows (minus clock-offset noise between clients).
        let gaps = zip(sorted.dropFirst(), sorted).map { $0 - $1 }
        #expect(gaps.filter { $0 < .milliseconds(15) }.count <= sorted.count / 20, "most slots 25 ms apart")
        for replica in replicas { _ = replica }
        await client.close()
    }

    @Test("ranks: once urgent senders wait, every slot goes to them until they are done; normal ones resume after")
    func slotsGoToTheHighestRank() async throws {
        let client = try await IsolatedServers.make("it_rate_ranks").migratedDatabase(logger: logger)
        let limiter = SharedRateLimiter(
            configuration: .init(key: "telegram", ratePerSecond: 40, headroom: 0), database: client, logger: logger
        )
        let log = RankLog()
        let clock = ContinuousClock()
        let stop = StopFlag()
        try await withThrowingTaskGroup { group in
            for _ in 0..<8 {  // a normal bulletin's senders keep asking
                group.addTask {
                    while !stop.isSet {
                        log.add(.normal, try await limiter.acquire(rank: .normal))
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(500))
            let urgentStart = clock.now
            try await withThrowingTaskGroup { urgent in
                for _ in 0..<4 {
                    urgent.addTask { for _ in 0..<10 { log.add(.urgent, try await limiter.acquire(rank: .urgent)) } }
                }
                try await urgent.waitForAll()
            }
            let urgentEnd = clock.now
            try await Task.sleep(for: .milliseconds(300))
            stop.set()
            try await group.waitForAll()
            let slots = log.all
            let urgentSlots = slots.filter { $0.rank == .urgent }.map(\.slot)
            #expect(urgentSlots.count == 40)
            // 40 slots at 40/s: about a second; and no normal slot in between once the urgent ones asked.
            #expect(urgentEnd - urgentStart < .milliseconds(1300), "\(urgentEnd - urgentStart)")
            let firstUrgent = urgentSlots.min()!
            let lastUrgent = urgentSlots.max()!
            let normalInside = slots.filter { $0.rank == .normal && $0.slot > firstUrgent && $0.slot < lastUrgent }
            #expect(normalInside.isEmpty, "\(normalInside.count) normal slots while urgent senders waited")
            #expect(slots.contains { $0.rank == .normal && $0.slot > lastUrgent }, "normal senders resume")
        }
        await client.close()
    }

    @Test("within a rank, the job that began first gets every slot while it asks; the next one gets what it leaves")
    func earliestJobFirst() async throws {
        let client = try await IsolatedServers.make("it_rate_jobs").migratedDatabase(logger: logger)
        let limiter = SharedRateLimiter(
            configuration: .init(key: "telegram", ratePerSecond: 100, headroom: 0), database: client, logger: logger
        )
        let first = await limiter.begin(.normal)
        let second = await limiter.begin(.normal)
        #expect(first < second)
        let order = TicketLog()
        try await withThrowingTaskGroup { group in
            // Each job has several senders asking at once, as a job's sends in flight do; the later job asks first.
            for _ in 0..<3 {
                group.addTask {
                    for _ in 0..<10 {
                        try await limiter.acquire(rank: .normal, ticket: second)
                        order.add(second)
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(30))
            for _ in 0..<3 {
                group.addTask {
                    for _ in 0..<10 {
                        try await limiter.acquire(rank: .normal, ticket: first)
                        order.add(first)
                    }
                }
            }
            try await group.waitForAll()
        }
        let slots = order.all
        #expect(slots.count == 60)
        // From the moment the first job asks, all its 30 slots come before any more of the second job's.
        let firstStart = try #require(slots.firstIndex(of: first))
        let firstEnd = try #require(slots.lastIndex(of: first))
        #expect(firstEnd - firstStart == 29, "the first job's slots were interleaved: \(slots)")
        #expect(firstStart <= 6, "the first job waited behind the second: \(slots)")
        await limiter.end(.normal)
        await limiter.end(.normal)
        await client.close()
    }

    @Test("a flood signal on one replica pauses the channel's schedule for every replica")
    func pauseIsShared() async throws {
        let client = try await IsolatedServers.make("it_rate_pause").migratedDatabase(logger: logger)
        let configuration = SharedRateLimiter.Configuration(key: "telegram", ratePerSecond: 20, headroom: 0)
        let first = SharedRateLimiter(configuration: configuration, database: client, logger: logger)
        let second = SharedRateLimiter(
            configuration: configuration, database: try DatabasePool(url: client.configuration.url, logger: logger),
            logger: logger
        )
        let clock = ContinuousClock()
        for _ in 0..<5 {
            try await first.acquire()
            try await second.acquire()
        }
        try await first.pause(for: .seconds(1))
        let paused = clock.now
        // The other replica may still use the slots it leased before (a tenth of a second's worth), then none
        // until the pause is over.
        var late: [ContinuousClock.Instant] = []
        for _ in 0..<6 { late.append(try await second.acquire()) }
        let afterPause = late.filter { $0 - paused >= .milliseconds(950) }
        #expect(afterPause.count >= 4, "\(late.map { $0 - paused })")
        #expect(try await first.acquire() - paused >= .milliseconds(950))
        await client.close()
    }
}

final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}

final class TicketLog: Sendable {
    private let entries = Mutex<[UInt64]>([])
    func add(_ ticket: UInt64) { entries.withLock { $0.append(ticket) } }
    var all: [UInt64] { entries.withLock { $0 } }
}

final class RankLog: Sendable {
    struct Entry: Sendable {
        var rank: DeliveryRank
        var slot: ContinuousClock.Instant
    }
    private let entries = Mutex<[Entry]>([])
    func add(_ rank: DeliveryRank, _ slot: ContinuousClock.Instant) {
        entries.withLock { $0.append(Entry(rank: rank, slot: slot)) }
    }
    var all: [Entry] { entries.withLock { $0 } }
}

/// The state dispatcher replicas share through PostgreSQL: the rate-limit schedule, the access token, the
/// batched statuses. Each test has a database of its own.
@Suite("Shared state in PostgreSQL")
struct SharedStateTests {
    let logger = Logger(label: "test.dispatch.shared")

    private func database(_ name: String) async throws -> DatabasePool {
        try await IsolatedServers.make(name).migratedDatabase(logger: logger)
    }

    @Test("no rate: acquire returns at once and never touches the database")
    func unlimited() async throws {
        let client = try await database("it_rate_none")
        let limiter = SharedRateLimiter(
            configuration: .init(key: "wechat", ratePerSecond: 0), database: client, logger: logger)
        for _ in 0..<10_000 { try await limiter.acquire() }
        let rows = try await client.query("SELECT count(*) FROM rate_limits WHERE channel = 'wechat'").first!.decode(
            Int.self, at: 0)
        #expect(rows == 0)
        await client.close()
    }

    @Test("an expired token is renewed once for all replicas, and a token another replica renewed is taken as is")
    func tokenRenewedOnce() async throws {
        let client = try await database("it_tokens")
        let fetches = Fetches()
        let fetch: @Sendable () async throws -> WeChat.AccessToken = {
            let n = fetches.next()
            try await Task.sleep(for: .milliseconds(50))
            return WeChat.AccessToken(token: "token-\(n)", expiresIn: .seconds(7200))
        }
        let replicaA = ProviderTokenStore(account: "wechat:wxtest", database: client, logger: logger, fetch: fetch)
        let replicaB = ProviderTokenStore(
            account: "wechat:wxtest", database: try DatabasePool(url: client.configuration.url, logger: logger),
            logger: logger, fetch: fetch
        )
        #expect(try await replicaA.current() == "token-1")
        #expect(try await replicaB.current() == "token-1", "the second replica reads the shared token")
        #expect(fetches.count == 1)

        // The provider refuses token-1 (expired): 20 sends on each replica ask for a renewal at once.
        let renewed = try await withThrowingTaskGroup(of: String.self) { group in
            for i in 0..<40 {
                group.addTask { try await (i % 2 == 0 ? replicaA : replicaB).renew(rejected: "token-1") }
            }
            var all: Set<String> = []
            for try await token in group { all.insert(token) }
            return all
        }
        #expect(renewed == ["token-2"])
        #expect(fetches.count == 2, "one renewal for everyone")
        let stored = try await client.query("SELECT token FROM provider_tokens WHERE account = 'wechat:wxtest'")
            .first!.decode(String.self, at: 0)
        #expect(stored == "token-2")
        await client.close()
    }

    @Test("statuses are written in batches, only over queued deliveries, and sync waits for the commit")
    func statusBatches() async throws {
        let client = try await database("it_status")
        let recipients = try await DeliveryFixtures.seed(
            client, channel: .telegram, addresses: (0..<500).map { DeliveryFixtures.address(.telegram, $0) }
        )
        let writer = StatusWriter(channel: "telegram", database: client, interval: .milliseconds(20), logger: logger)
        let loop = Task { await writer.run() }
        // One delivery already read: a late `sent` must not overwrite it.
        try await client.query("UPDATE deliveries SET state = 'read' WHERE id = \(recipients[0].deliveryID!)")
        // A failed attempt and its retry's success in one batch: both attempts count, the success wins.
        writer.add(
            .init(deliveryID: recipients[1].deliveryID!, state: .queued, error: "transient: busy", attempted: true))
        for (i, recipient) in recipients.enumerated() {
            writer.add(
                .init(
                    deliveryID: recipient.deliveryID!, state: i % 10 == 9 ? .failed : .sent,
                    providerMessageID: i % 10 == 9 ? nil : "m\(i)", error: i % 10 == 9 ? "403: blocked" : nil,
                    attempted: true
                )
            )
        }
        await writer.sync()
        var states: [String: Int] = [:]
        for row in try await client.query("SELECT state, count(*) FROM deliveries GROUP BY state").rows {
            let (state, count) = try row.decode(String.self, Int.self)
            states[state] = count
        }
        #expect(states == ["read": 1, "sent": 449, "failed": 50])
        let attempts = try await client.query("SELECT sum(attempts)::int8 FROM deliveries").first!.decode(
            Int.self, at: 0)
        #expect(attempts == 500)
        let retried = try await client.query(
            "SELECT state, attempts FROM deliveries WHERE id = \(recipients[1].deliveryID!)"
        )
        .first!.decode(String.self, Int.self)
        #expect(retried.0 == "sent" && retried.1 == 2)
        loop.cancel()
        await loop.value
        await client.close()
    }

    @Test("a send waits while maxUnrecorded outcomes wait for their commit, and goes on once they are committed")
    func roomForOutcomes() async throws {
        let client = try await database("it_status_room")
        let recipients = try await DeliveryFixtures.seed(
            client, channel: .telegram, addresses: (0..<4).map { DeliveryFixtures.address(.telegram, $0) }
        )
        // No loop: commits happen only when the test flushes.
        let writer = StatusWriter(
            channel: "telegram", database: client, interval: .seconds(3600), maxUnrecorded: 3, logger: logger
        )
        for recipient in recipients.prefix(2) {
            writer.add(.init(deliveryID: recipient.deliveryID!, state: .sent, providerMessageID: "m", attempted: true))
        }
        await writer.room()  // two uncommitted: room for a third
        writer.add(.init(deliveryID: recipients[2].deliveryID!, state: .sent, providerMessageID: "m", attempted: true))
        let admitted = Fetches()
        let waiting = Task {
            await writer.room()
            _ = admitted.next()
        }
        try await Task.sleep(for: .milliseconds(300))
        #expect(admitted.count == 0, "three outcomes uncommitted: the send waits")
        #expect(await writer.flush())
        await waiting.value
        #expect(admitted.count == 1)
        let sent = try await client.query("SELECT count(*) FROM deliveries WHERE state = 'sent'").first!.decode(
            Int.self, at: 0)
        #expect(sent == 3)
        await client.close()
    }
}

private final class Slots: Sendable {
    private let slots = Mutex<[ContinuousClock.Instant]>([])
    func append(_ slot: ContinuousClock.Instant) { slots.withLock { $0.append(slot) } }
    var all: [ContinuousClock.Instant] { slots.withLock { $0 } }
}

private final class Fetches: Sendable {
    private let value = Mutex(0)
    func next() -> Int {
        value.withLock {
            $0 += 1
            return $0
        }
    }
    var count: Int { value.withLock { $0 } }
}
