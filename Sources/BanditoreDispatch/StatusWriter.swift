import BanditorePostgres
import BanditoreStore
import Logging
import Synchronization

/// Writes delivery outcomes in batches: sends add their outcome as soon as they know it, a loop commits whatever
/// gathered every `interval` with one `UPDATE … FROM unnest(…)`, and a job waits with ``sync()`` until its
/// outcomes are committed before it is acknowledged. A crash forgets the outcomes not committed yet, and a send waits
/// with ``room()`` while `maxUnrecorded` are: however slow the database, a killed replica leaves at most that many
/// sends (plus those in flight) that the provider took and the database does not know of. Only queued deliveries change (and a cancelled one whose send was already under way when its bulletin was
/// cancelled: it records what happened). While the database is unreachable the outcomes wait and the loop tries
/// again.
final class StatusWriter: Sendable {
    /// One delivery's new state.
    struct Outcome: Sendable {
        var deliveryID: Int64
        /// `sent`, `failed`, `skipped`, or `queued` (tried, will be retried).
        var state: DeliveryState
        var providerMessageID: String?
        var error: String?
        /// Why it failed for good (with `failed`).
        var failure: DeliveryFailure?
        /// Whether a send was attempted (counts in `attempts`).
        var attempted: Bool
    }

    private struct Merged {
        var state: DeliveryState
        var providerMessageID: String?
        var error: String?
        var failure: DeliveryFailure?
        var attempts: Int
    }

    private struct State {
        var pending: [Outcome] = []
        /// Outcomes added so far and outcomes committed so far: a waiter waits for `committed ≥ its ticket`.
        var added = 0
        var committed = 0
        var waiters: [(ticket: Int, continuation: CheckedContinuation<Void, Never>)] = []
        /// Sends waiting in ``room()`` for a commit.
        var roomWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())
    private let channel: String
    private let database: DatabasePool
    private let interval: Duration
    /// Outcomes added and not committed at which ``room()`` waits.
    let maxUnrecorded: Int
    private let logger: Logger
    let onCommit: @Sendable (Int) -> Void

    init(
        channel: String, database: DatabasePool, interval: Duration, maxUnrecorded: Int = 1_000, logger: Logger,
        onCommit: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.channel = channel
        self.database = database
        self.interval = interval
        self.maxUnrecorded = max(1, maxUnrecorded)
        self.logger = logger
        self.onCommit = onCommit
    }

    func add(_ outcome: Outcome) {
        state.withLock {
            $0.pending.append(outcome)
            $0.added += 1
        }
    }

    /// Returns once fewer than `maxUnrecorded` outcomes wait for their commit: a send starts only then.
    func room() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.added - state.committed < maxUnrecorded { return true }
                state.roomWaiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Returns once every outcome added before the call is committed.
    func sync() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if state.committed >= state.added { return true }
                state.waiters.append((state.added, continuation))
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Commits batches until cancelled, then once more for what is left.
    func run() async {
        var failures = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: failures == 0 ? interval : .milliseconds(min(200 * failures, 2_000)))
            failures = await flush() ? 0 : failures + 1
        }
        for _ in 0..<5 where await !flush() {
            try? await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Commits what is pending; false when the database refused (the outcomes stay pending).
    @discardableResult
    func flush() async -> Bool {
        let batch = state.withLock { state -> [Outcome] in
            defer { state.pending.removeAll(keepingCapacity: true) }
            return state.pending
        }
        guard !batch.isEmpty else { return true }
        // One row per delivery: a failed attempt and the retry's outcome can land in the same batch, and an
        // `UPDATE … FROM` applies only one source row per target row. Attempts add up, the latest state wins.
        var merged: [Int64: Merged] = [:]
        var order: [Int64] = []
        for outcome in batch {
            if var current = merged[outcome.deliveryID] {
                current.state = outcome.state
                current.failure = outcome.failure
                current.providerMessageID = outcome.providerMessageID ?? current.providerMessageID
                current.error = outcome.error ?? current.error
                current.attempts += outcome.attempted ? 1 : 0
                merged[outcome.deliveryID] = current
            } else {
                order.append(outcome.deliveryID)
                merged[outcome.deliveryID] = Merged(
                    state: outcome.state, providerMessageID: outcome.providerMessageID, error: outcome.error,
                    failure: outcome.failure, attempts: outcome.attempted ? 1 : 0
                )
            }
        }
        let rows = order.map { merged[$0]! }
        do {
            try await database.query(
                """
                UPDATE deliveries AS d
                   SET state = v.state,
                       provider_message_id = COALESCE(v.provider_message_id, d.provider_message_id),
                       last_error = CASE WHEN v.state = 'sent' THEN NULL ELSE COALESCE(v.error, d.last_error) END,
                       attempts = d.attempts + v.attempts,
                       failure_kind = v.failure_kind, failure_code = v.failure_code,
                       updated_at = now()
                  FROM unnest(\(order)::bigint[], \(rows.map(\.state))::text[],
                              \(rows.map(\.providerMessageID))::text[], \(rows.map(\.error))::text[],
                              \(rows.map(\.attempts))::int[], \(rows.map { $0.failure?.kind })::text[],
                              \(rows.map { $0.failure?.code })::text[])
                       AS v(id, state, provider_message_id, error, attempts, failure_kind, failure_code)
                 WHERE d.id = v.id
                   AND (d.state = 'queued' OR (d.state = 'cancelled' AND v.state = 'sent'))
                """
            )
            // A provider's report may have come before the send was recorded here.
            let sent = rows.compactMap(\.providerMessageID)
            if !sent.isEmpty {
                let channel = self.channel
                _ = try await database.withConnection {
                    try await DeliveryReports.applyKept(channel: channel, providerMessageIDs: sent, on: $0)
                }
            }
        } catch {
            logger.warning(
                "delivery statuses not written yet; will retry",
                metadata: ["error": "\(String(reflecting: error))", "deliveries": "\(batch.count)"]
            )
            state.withLock { $0.pending.insert(contentsOf: batch, at: 0) }
            return false
        }
        onCommit(batch.count)
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.committed += batch.count
            let committed = state.committed
            var ready = state.waiters.filter { $0.ticket <= committed }.map(\.continuation)
            state.waiters.removeAll { $0.ticket <= committed }
            // Each waiting send takes one place of the room the commit made, in the order they came.
            let room = min(max(0, maxUnrecorded - (state.added - committed)), state.roomWaiters.count)
            ready += state.roomWaiters.prefix(room)
            state.roomWaiters.removeFirst(room)
            return ready
        }
        for continuation in ready { continuation.resume() }
        return true
    }
}
