import BanditoreConcurrency
import BanditoreCore
import Synchronization

/// Bounds how many sends a replica has in flight: `acquire` waits while `limit` are out, and a place that comes
/// free goes to the highest rank waiting (urgent, then replies, then normal bulletins). A task cancelled while it
/// waits leaves the queue and throws `CancellationError`.
final class AsyncSemaphore: Sendable {
    private struct State {
        var available: Int
        /// Waiters per rank (index: the rank's raw value).
        var waiters: [WaiterQueue<Void>] = Array(repeating: WaiterQueue(), count: DeliveryRank.allCases.count)
    }
    private let state: Mutex<State>

    init(limit: Int) {
        state = Mutex(State(available: max(1, limit)))
    }

    func acquire(rank: DeliveryRank = .normal) async throws {
        try await WaiterQueue<Void>.wait { ticket, continuation in
            let ready = state.withLock { state -> Bool in
                if state.available > 0 {
                    state.available -= 1
                    return true
                }
                state.waiters[rank.rawValue].append(continuation, ticket: ticket)
                return false
            }
            if ready { continuation.resume() }
        } leave: { ticket in
            self.state.withLock { $0.waiters[rank.rawValue].remove(ticket) }
        }
    }

    func release() {
        let waiter = state.withLock { state -> WaiterQueue<Void>.Continuation? in
            if let rank = state.waiters.firstIndex(where: { !$0.isEmpty }) { return state.waiters[rank].popFirst() }
            state.available += 1
            return nil
        }
        waiter?.resume()
    }
}
