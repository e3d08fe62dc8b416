import BanditoreCore
import DequeModule
import Synchronization

/// Bounds how many sends a replica has in flight: `acquire` waits while `limit` are out, and a place that comes
/// free goes to the highest rank waiting (urgent, then replies, then normal bulletins).
final class AsyncSemaphore: Sendable {
    private struct State {
        var available: Int
        /// Waiters per rank (index: the rank's raw value).
        var waiters: [Deque<CheckedContinuation<Void, Never>>] = Array(
            repeating: [], count: DeliveryRank.allCases.count)
    }
    private let state: Mutex<State>

    init(limit: Int) {
        state = Mutex(State(available: max(1, limit)))
    }

    func acquire(rank: DeliveryRank = .normal) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state -> Bool in
                if state.available > 0 {
                    state.available -= 1
                    return true
                }
                state.waiters[rank.rawValue].append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func release() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let rank = state.waiters.firstIndex(where: { !$0.isEmpty }) { return state.waiters[rank].popFirst() }
            state.available += 1
            return nil
        }
        waiter?.resume()
    }
}
