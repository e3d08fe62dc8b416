import BanditorePostgres
import Logging

/// A channel's rate limit shared by every dispatcher replica: a schedule of send slots kept in PostgreSQL.
///
/// The row `rate_limits(key)` holds the instant of the channel's next free slot. A replica leases the next `n`
/// slots (about a tenth of a second's worth) with one `UPDATE … RETURNING`, so the database sees a few statements
/// per second whatever the message rate. Slots are `1/rate` apart on the database's clock and handed out in order,
/// so together the replicas never exceed the rate; each replica waits for its slot's instant before sending.
/// A slot that its replica reaches more than half an interval late is dropped rather than used, so that a stalled
/// replica cannot bunch its sends together afterwards.
///
/// The configured rate is lowered by `headroom` (4% by default): the provider measures at its end, after network
/// jitter, so running a hair under its limit keeps its 429s away.
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

        public init(key: String, ratePerSecond: Double?, headroom: Double = 0.04, leaseSeconds: Double = 0.1) {
            self.key = key
            self.ratePerSecond = ratePerSecond.flatMap { $0 > 0 ? $0 : nil }
            self.headroom = min(max(headroom, 0), 0.5)
            self.leaseSeconds = max(leaseSeconds, 0.001)
        }

        /// The pace the schedule is made at.
        public var effectiveRate: Double? { ratePerSecond.map { $0 * (1 - headroom) } }
    }

    public nonisolated let configuration: Configuration
    private let database: PostgresClient
    private let logger: Logger
    private let clock = ContinuousClock()
    /// Leased slots not used yet, earliest first.
    private var slots: [ContinuousClock.Instant] = []
    private var next = 0
    private var lease: Task<Void, any Error>?
    private var prepared = false
    private var epochSamples: [ContinuousClock.Instant] = []

    public init(configuration: Configuration, database: PostgresClient, logger: Logger) {
        self.configuration = configuration
        self.database = database
        self.logger = logger
    }

    /// Waits for the next send slot and returns its instant (at or just before now). Without a rate, returns at once.
    @discardableResult
    public func acquire() async throws -> ContinuousClock.Instant {
        guard let rate = configuration.effectiveRate else { return clock.now }
        let interval = Duration.seconds(1 / rate)
        while true {
            while next < slots.count {
                let slot = slots[next]
                next += 1
                let now = clock.now
                if now > slot + interval / 2 { continue }  // too late to use without bunching
                if slot > now { try await clock.sleep(until: slot) }
                return slot
            }
            // One lease at a time per replica; callers arriving meanwhile wait for it. The lease installs its slots
            // and clears itself on the actor before it completes, so a waiter that wakes finds them.
            if let lease {
                _ = try? await lease.value
                continue
            }
            let task = Task { try await self.leaseAndInstall(rate: rate) }
            lease = task
            try await task.value
        }
    }

    private func leaseAndInstall(rate: Double) async throws {
        defer { lease = nil }
        slots = try await leaseOnce(rate: rate)
        next = 0
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
