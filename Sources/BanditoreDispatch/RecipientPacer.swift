import Synchronization

/// Per-recipient pacing: at most one message per `interval` to the same address (Telegram about 1 per second per
/// chat, WhatsApp about 1 per 6 s per user). A bulletin reaches each address once; this spaces replies and retries.
final class RecipientPacer: Sendable {
    private struct State {
        var next: [String: ContinuousClock.Instant] = [:]
        var reservations = 0
    }
    let interval: Duration
    private let state = Mutex(State())
    private let clock = ContinuousClock()

    init(interval: Duration) {
        self.interval = interval
    }

    /// Reserves the address's next turn and waits for it.
    func wait(for address: String) async throws {
        guard interval > .zero else { return }
        let now = clock.now
        let turn = state.withLock { state -> ContinuousClock.Instant in
            state.reservations += 1
            if state.reservations % 4096 == 0 {  // forget addresses whose turn is long past
                state.next = state.next.filter { $0.value > now }
            }
            let turn = max(state.next[address] ?? now, now)
            state.next[address] = turn + interval
            return turn
        }
        if turn > now { try await clock.sleep(until: turn) }
    }
}
