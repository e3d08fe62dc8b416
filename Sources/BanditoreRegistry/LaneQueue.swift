import Synchronization

/// The commands waiting for one of the registry's lanes. The lane takes everything that is waiting at once (up to
/// a limit), so that a busy lane applies many commands in one transaction while an idle one answers the first
/// command as soon as it comes.
final class LaneQueue<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var waiter: CheckedContinuation<[Element]?, Never>?
        var finished = false
    }

    private let state = Mutex(State())

    func push(_ element: Element) {
        let resumed: (CheckedContinuation<[Element]?, Never>, [Element])? = state.withLock { state in
            if let waiter = state.waiter {
                state.waiter = nil
                return (waiter, [element])
            }
            state.items.append(element)
            return nil
        }
        if let (waiter, elements) = resumed { waiter.resume(returning: elements) }
    }

    /// No more elements: a lane waiting, or taking the last ones, gets nil after them.
    func finish() {
        let waiter = state.withLock { state -> CheckedContinuation<[Element]?, Never>? in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// Up to `limit` waiting elements, in order; waits for one when there are none; nil once finished and empty.
    /// One lane takes from a queue: a second concurrent caller is a programming error.
    func take(limit: Int) async -> [Element]? {
        await withCheckedContinuation { continuation in
            let ready: [Element]?? = state.withLock { state in
                if !state.items.isEmpty {
                    let count = min(limit, state.items.count)
                    let taken = Array(state.items.prefix(count))
                    state.items.removeFirst(count)
                    return .some(taken)
                }
                if state.finished { return .some(nil) }
                precondition(state.waiter == nil, "one lane takes from a LaneQueue")
                state.waiter = continuation
                return .none
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
