import BanditoreCore
import BanditorePostgres
import Logging

/// A channel's rate limit shared by every dispatcher replica: a schedule of send slots kept in PostgreSQL.
///
/// The row `rate_limits(key)` holds the instant of the channel's next free slot. A replica leases the next `n`
/// slots (about a tenth of a second's worth) with one `UPDATE … RETURNING`, so the database sees a few statements
/// per second whatever the message rate. Slots are `1/rate` apart on the database's clock and handed out in order,
/// so together the replicas never exceed the rate; each replica waits for its slot's instant before sending.
/// A slot that its replica reaches more than half an interval (and at least 25 ms) late is dropped rather than used,
/// so that a stalled replica cannot bunch its sends together afterwards.
///
/// Inside a replica each slot goes, at its instant, to the highest rank waiting (``DeliveryRank``): an urgent
/// bulletin's sends take every slot while they wait, replies the ones urgent work leaves, normal bulletins the rest.
///
/// The configured rate is lowered by `headroom` (2% by default): the provider measures at its end, after network
/// jitter, so running a hair under its limit keeps its 429s away. The provider's flood signal (``pause(for:)``)
/// moves the shared schedule past its hint for every replica.
public actor SharedRateLimiter {
    public struct Configuration: Sendable, Hashable {
        /// The row's key: the channel, or channel and sender account.
        public var key: String
        /// Messages per second allowed to all replicas together; nil: no limit.
        public var ratePerSecond: Double?
        /// Share of the rate left unused, 0…0.5.
        public var headroom: Double
        /// How much time's worth of slots one lease takes.
        public var leaseSeconds: Double

        public init(key: String, ratePerSecond: Double?, headroom: Double = 0.02, leaseSeconds: Double = 0.1) {
            self.key = key
            self.ratePerSecond = ratePerSecond.flatMap { $0 > 0 ? $0 : nil }
            self.headroom = min(max(headroom, 0), 0.5)
            self.leaseSeconds = max(leaseSeconds, 0.001)
        }

        /// The pace the schedule is made at.
        public var effectiveRate: Double? { ratePerSecond.map { $0 * (1 - headroom) } }
    }

    public nonisolated let configuration: Configuration
    private let database: DatabasePool
    private let logger: Logger
    private let clock = ContinuousClock()
    /// Leased slots not used yet, earliest first.
    private var slots: [ContinuousClock.Instant] = []
    private var next = 0
    private var lease: Task<Void, any Error>?
    private var prepared = false
    private var epochSamples: [ContinuousClock.Instant] = []
    private struct Waiter {
        /// The job's turn (``begin(_:)``): the earliest job of a rank waiting gets the slot.
        var ticket: UInt64
        /// Arrival, among waiters of one job.
        var sequence: UInt64
        var continuation: CheckedContinuation<ContinuousClock.Instant, any Error>
    }
    /// Callers waiting for a slot, per rank (index: the rank's raw value).
    private var waiters: [[Waiter]] = Array(repeating: [], count: DeliveryRank.allCases.count)
    private var arrivals: UInt64 = 0
    private var tickets: UInt64 = 0
    /// Jobs sending now, per rank.
    private var active = Array(repeating: 0, count: DeliveryRank.allCases.count)
    /// Hands slots to waiters while there are any.
    private var distributor: Task<Void, Never>?
    /// Slots before this instant belong to the schedule before the provider's flood signal.
    private var pausedUntil: ContinuousClock.Instant?

    public init(configuration: Configuration, database: DatabasePool, logger: Logger) {
        self.configuration = configuration
        self.database = database
        self.logger = logger
    }

    /// Waits for a send slot and returns its instant (at or just before now): the next slot that no waiter of a
    /// higher rank wants, nor one of the same rank whose job began earlier (`ticket`, from ``begin(_:)``; without
    /// one, after every job). Without a rate, returns at once.
    @discardableResult
    public func acquire(rank: DeliveryRank = .normal, ticket: UInt64 = .max) async throws -> ContinuousClock.Instant {
        guard let rate = configuration.effectiveRate else { return clock.now }
        return try await withCheckedThrowingContinuation { continuation in
            arrivals += 1
            waiters[rank.rawValue].append(Waiter(ticket: ticket, sequence: arrivals, continuation: continuation))
            if distributor == nil {
                distributor = Task { await self.distribute(rate: rate) }
            }
        }
    }

    /// Gives each slot, at its instant, to the first waiter of the highest rank; ends when nobody waits.
    private func distribute(rate: Double) async {
        while waiters.contains(where: { !$0.isEmpty }) {
            let slot: ContinuousClock.Instant
            do {
                slot = try await nextSlot(rate: rate)
                if slot > clock.now { try await clock.sleep(until: slot) }
            } catch {
                for rank in waiters.indices {
                    for waiter in waiters[rank] { waiter.continuation.resume(throwing: error) }
                    waiters[rank].removeAll()
                }
                break
            }
            // Paused while this slot was awaited: it belongs to the schedule before the pause.
            if let pausedUntil, slot < pausedUntil { continue }
            // A higher rank at work whose sender is not asking at this instant (it is writing its last outcome or
            // claiming its recipient): the slot waits for it, up to an interval, rather than go to a lower rank.
            if let busy = active.firstIndex(where: { $0 > 0 }), busy < (waiters.firstIndex { !$0.isEmpty } ?? Int.max) {
                let deadline = slot + .seconds(1 / rate)
                while waiters[busy].isEmpty, active[busy] > 0, clock.now < deadline {
                    try? await clock.sleep(for: .milliseconds(1))
                }
            }
            guard let rank = waiters.firstIndex(where: { !$0.isEmpty }) else { break }
            // The earliest job first: jobs that share the slots evenly end together and leave the channel idle
            // while they all settle at once; one after the other, the next sends while the first settles.
            let first = waiters[rank].indices.min { Self.precedes(waiters[rank][$0], waiters[rank][$1]) }!
            waiters[rank].remove(at: first).continuation.resume(returning: slot)
        }
        distributor = nil
    }

    private static func precedes(_ a: Waiter, _ b: Waiter) -> Bool {
        (a.ticket, a.sequence) < (b.ticket, b.sequence)
    }

    /// A job of `rank` starts sending: until ``end(_:)``, lower ranks get only the slots it leaves. Returns the
    /// job's ticket for ``acquire(rank:ticket:)``: a job that began earlier is served first within its rank.
    @discardableResult
    public func begin(_ rank: DeliveryRank) -> UInt64 {
        active[rank.rawValue] += 1
        tickets += 1
        return tickets
    }

    /// The job of `rank` that called ``begin(_:)`` is done sending.
    public func end(_ rank: DeliveryRank) { active[rank.rawValue] = max(0, active[rank.rawValue] - 1) }

    /// Moves the channel's shared schedule to at least `duration` from now, for every replica (the provider's
    /// flood signal), and drops the slots this replica leased before it.
    public func pause(for duration: Duration) async throws {
        guard configuration.effectiveRate != nil, duration > .zero else { return }
        slots = []
        next = 0
        pausedUntil = max(pausedUntil ?? clock.now, clock.now + duration)
        try await database.query(
            """
            UPDATE rate_limits
               SET next_slot_at = GREATEST(next_slot_at, clock_timestamp() + make_interval(secs => \(duration.inSeconds)))
             WHERE channel = \(configuration.key)
            """
        )
        logger.warning(
            "channel paused on the provider's flood signal", metadata: ["pause.seconds": "\(duration.inSeconds)"])
    }

    /// How late a slot may still be used: half an interval, and at least 25 ms, so that at a high rate (1,000/s,
    /// a millisecond apart) a sender's ordinary jitter does not drop slots; the providers' buckets hold a second's
    /// worth, far more than the few sends that may then go close together.
    static func lateness(_ interval: Duration) -> Duration { max(interval / 2, .milliseconds(25)) }

    /// The next leased slot that is not too late to use, leasing more when none is left. The next lease is asked
    /// for while half of this one is still to come, so that it continues the schedule where this one ends: asked for
    /// only once the last slot is used, at a high rate (1,000/s, a millisecond apart) the schedule would restart from
    /// the database's now, a round trip later, at every lease (about 3% of the slots lost at ten leases a second).
    private func nextSlot(rate: Double) async throws -> ContinuousClock.Instant {
        let interval = Duration.seconds(1 / rate)
        while true {
            while next < slots.count {
                let slot = slots[next]
                next += 1
                if let pausedUntil, slot < pausedUntil { continue }  // leased before a pause
                if clock.now > slot + Self.lateness(interval) { continue }  // too late to use without bunching
                if lease == nil, (slots.count - next) * 2 < slots.count {
                    // A failure here shows again, thrown, when the slots run out and the lease is asked for again.
                    lease = Task { try await self.leaseAndInstall(rate: rate) }
                }
                return slot
            }
            // One lease at a time per replica. The lease installs its slots and clears itself on the actor before
            // it completes.
            if let lease {
                _ = try? await lease.value
                continue
            }
            let task = Task { try await self.leaseAndInstall(rate: rate) }
            lease = task
            try await task.value
        }
    }

    /// Leases the next slots and puts them after the ones not used yet.
    private func leaseAndInstall(rate: Double) async throws {
        defer { lease = nil }
        let leased = try await leaseOnce(rate: rate)
        slots.removeFirst(next)
        next = 0
        slots += leased
    }

    private func leaseOnce(rate: Double) async throws -> [ContinuousClock.Instant] {
        if !prepared {
            try await database.query(
                """
                INSERT INTO rate_limits (channel, rate_per_second, burst, tokens) VALUES (\(configuration.key), \(rate), 1, 0)
                ON CONFLICT (channel) DO UPDATE SET rate_per_second = EXCLUDED.rate_per_second
                """
            )
            prepared = true
        }
        let count = max(1, Int((rate * configuration.leaseSeconds).rounded(.up)))
        let interval = 1 / rate
        // The first slot is the later of the row's next slot and now: idle time is not saved up as a burst.
        let result = try await database.query(
            """
            UPDATE rate_limits
               SET next_slot_at = GREATEST(next_slot_at, clock_timestamp()) + make_interval(secs => \(Double(count) * interval))
             WHERE channel = \(configuration.key)
            RETURNING EXTRACT(EPOCH FROM next_slot_at)::float8, EXTRACT(EPOCH FROM clock_timestamp())::float8
            """
        )
        let received = clock.now
        guard let row = result.first else {
            prepared = false
            throw DispatchError(.rateLimit, detail: "rate limit row \(configuration.key) is missing")
        }
        let (end, databaseNow) = try row.decode(Double.self, Double.self)
        let epoch = localEpoch(received: received, databaseNow: databaseNow)
        let first = end - Double(count) * interval
        return (0..<count).map { epoch + .seconds(first + Double($0) * interval) }
    }

    /// The database's epoch on the local clock, from the lease's answer: the earliest estimate of the last few
    /// leases, since a slow answer only makes an estimate late. Every replica maps the shared schedule to its own
    /// clock this way within a fraction of a millisecond, so that replicas do not overlap.
    private func localEpoch(received: ContinuousClock.Instant, databaseNow: Double) -> ContinuousClock.Instant {
        let sample = received - .seconds(databaseNow)
        epochSamples.append(sample)
        if epochSamples.count > 32 { epochSamples.removeFirst(epochSamples.count - 32) }
        return epochSamples.min()!
    }
}
