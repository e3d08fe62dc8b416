import BanditoreCore
import BanditorePostgres
import Synchronization

/// The per-recipient pace of a channel shared by every dispatcher replica, in `recipient_pace`: a send claims its
/// address as it starts, for `hold` (the interval and its margin); an address another replica holds is not sent to
/// until it is free. Once the provider has answered, the send's message has surely arrived: ``answered(_:)`` moves
/// the address's free time to at least the answer plus `interval`, so a request slowed on its way (a loaded machine)
/// cannot bring the next one within the interval at the provider. Claims (and answers) that arrive while a statement
/// is under way go together in the next one, so the database sees one statement per batch of sends however fast the
/// channel goes.
final class SharedRecipientPace: Sendable {
    private struct Pending {
        var address: String
        var continuation: CheckedContinuation<Duration?, any Error>
    }
    private struct State {
        var pending: [Pending] = []
        var answered: [String] = []
        var flushing = false
    }

    let channel: String
    let hold: Duration
    /// The least time from an answer to the next message to the same address.
    let interval: Duration
    private let database: DatabasePool
    private let state = Mutex(State())

    init(channel: String, hold: Duration, interval: Duration, database: DatabasePool) {
        self.channel = channel
        self.hold = hold
        self.interval = interval
        self.database = database
    }

    /// The provider answered a send to the address: it is free no sooner than `interval` from now. Written with the
    /// next statement; the send does not wait for it (its claim's hold covers the time until then).
    func answered(_ address: String) {
        let start = state.withLock { state -> Bool in
            state.answered.append(address)
            if state.flushing { return false }
            state.flushing = true
            return true
        }
        if start { Task { await self.flush() } }
    }

    /// Claims the address for a send starting now: nil when it is this replica's, else how long until it is free.
    func claim(_ address: String) async throws -> Duration? {
        try await withCheckedThrowingContinuation { continuation in
            let start = state.withLock { state -> Bool in
                state.pending.append(Pending(address: address, continuation: continuation))
                if state.flushing { return false }
                state.flushing = true
                return true
            }
            if start { Task { await self.flush() } }
        }
    }

    /// Runs one statement for every claim waiting, until none is.
    private func flush() async {
        while true {
            let (batch, answered) = state.withLock { state in
                let batch = state.pending
                let answered = state.answered
                state.pending.removeAll(keepingCapacity: true)
                state.answered.removeAll(keepingCapacity: true)
                if batch.isEmpty && answered.isEmpty { state.flushing = false }
                return (batch, answered)
            }
            guard !batch.isEmpty || !answered.isEmpty else { return }
            if !answered.isEmpty {
                // Lost with a database away: the claims' own hold still stands.
                try? await extendAll(Array(Set(answered)))
            }
            guard !batch.isEmpty else { continue }
            do {
                let answers = try await claimAll(Array(Set(batch.map(\.address))))
                for pending in batch { pending.continuation.resume(returning: answers[pending.address] ?? nil) }
            } catch {
                for pending in batch { pending.continuation.resume(throwing: error) }
            }
        }
    }

    /// One statement: each address answered is free no sooner than `interval` from now.
    private func extendAll(_ addresses: [String]) async throws {
        try await database.query(
            """
            UPDATE recipient_pace
               SET free_at = GREATEST(free_at, clock_timestamp() + make_interval(secs => \(interval.inSeconds)))
             WHERE channel = \(channel) AND address = ANY(\(addresses)::text[])
            """
        )
    }

    /// One statement: each address free now is claimed for `hold`; for the others, how long until they are free.
    private func claimAll(_ addresses: [String]) async throws -> [String: Duration?] {
        let rows = try await database.query(
            """
            WITH input AS (SELECT unnest(\(addresses)::text[]) AS address),
            claimed AS (
                INSERT INTO recipient_pace AS p (channel, address, free_at)
                SELECT \(channel), address, clock_timestamp() + make_interval(secs => \(hold.inSeconds)) FROM input
                ON CONFLICT (channel, address) DO UPDATE SET free_at = EXCLUDED.free_at
                 WHERE p.free_at <= clock_timestamp()
                RETURNING p.address
            )
            SELECT i.address, c.address IS NOT NULL,
                   GREATEST(COALESCE(EXTRACT(EPOCH FROM p.free_at - clock_timestamp())::float8, 0), 0)
              FROM input i
              LEFT JOIN claimed c ON c.address = i.address
              LEFT JOIN recipient_pace p ON p.channel = \(channel) AND p.address = i.address
            """
        ).rows
        var out: [String: Duration?] = [:]
        for row in rows {
            let (address, granted, wait) = try row.decode(String.self, Bool.self, Double.self)
            // A claim refused with its holder's time already past (it ended between the two reads): a short wait.
            out[address] = granted ? Duration?.none : .some(.milliseconds(max(Int(wait * 1000), 10)))
        }
        return out
    }
}
