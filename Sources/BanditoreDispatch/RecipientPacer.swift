import DequeModule
import Synchronization

/// Per-recipient pacing inside a replica: at least `interval + margin` between two sends to the same address
/// (Telegram about one a second per chat, WhatsApp one per 6 s per user), measured from the moment each send
/// starts, after its wait for the channel's rate limit, not from when its turn was reserved.
///
/// A send takes the address with ``acquire(_:)`` (one send per address at a time; the others wait in order),
/// waits for its rate-limit slot, and gives the address back with ``sent(_:)`` as it starts the request, or with
/// ``release(_:)`` when it does not send. The margin absorbs what happens between the start of a request and its
/// arrival at the provider.
final class RecipientPacer: Sendable {
    private struct Entry {
        var lastSend: ContinuousClock.Instant?
        var busy = false
        var waiters: Deque<CheckedContinuation<Void, Never>> = []
    }
    private struct State {
        var entries: [String: Entry] = [:]
        var operations = 0
    }

    let interval: Duration
    let margin: Duration
    private let state = Mutex(State())
    private let clock = ContinuousClock()

    init(interval: Duration, margin: Duration = .milliseconds(250)) {
        self.interval = interval
        self.margin = interval > .zero ? margin : .zero
    }

    /// Whether the pacer does anything.
    var isActive: Bool { interval > .zero }

    /// Takes the address (waiting while another send of this replica has it) and waits until its pace allows a
    /// send. Cancellation of the sleep gives it back and throws.
    func acquire(_ address: String) async throws {
        guard isActive else { return }
        let mustWait = state.withLock { state -> Bool in
            state.operations += 1
            if state.operations % 4096 == 0 { forgetIdle(&state) }
            if state.entries[address, default: Entry()].busy { return true }
            state.entries[address, default: Entry()].busy = true
            return false
        }
        if mustWait {
            // Resumed by the holder's `sent` or `release`, which hand the address over still busy.
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let handedOver = state.withLock { state -> Bool in
                    if state.entries[address, default: Entry()].busy {
                        state.entries[address, default: Entry()].waiters.append(continuation)
                        return false
                    }
                    state.entries[address, default: Entry()].busy = true
                    return true
                }
                if handedOver { continuation.resume() }
            }
        }
        // The turn may move while this waits: the previous send's answer counts too (``answered(_:)``).
        while let last = state.withLock({ $0.entries[address]?.lastSend }), last + interval + margin > clock.now {
            do {
                try await clock.sleep(until: last + interval + margin)
            } catch {
                release(address)
                throw error
            }
        }
    }

    /// How long until a send to the address could start: zero when nobody holds it and its pace allows one now.
    func wait(for address: String) -> Duration {
        guard isActive else { return .zero }
        return state.withLock { state in
            guard let entry = state.entries[address] else { return .zero }
            if entry.busy { return interval + margin }
            guard let last = entry.lastSend else { return .zero }
            return max(.zero, last + interval + margin - clock.now)
        }
    }

    /// The send to the address starts now: its pace counts from here.
    func sent(_ address: String) {
        guard isActive else { return }
        handOver(address, sentAt: clock.now)
    }

    /// The provider answered a send to the address: the message has arrived, so the next one waits `interval` from
    /// now at least (a request slowed on its way must not bring the next within the interval at the provider).
    func answered(_ address: String) {
        guard isActive else { return }
        let now = clock.now - margin  // the turn adds the margin again
        state.withLock { state in
            guard var entry = state.entries[address] else { return }
            entry.lastSend = max(entry.lastSend ?? now, now)
            state.entries[address] = entry
        }
    }

    /// The address was taken but not sent to.
    func release(_ address: String) {
        guard isActive else { return }
        handOver(address, sentAt: nil)
    }

    private func handOver(_ address: String, sentAt: ContinuousClock.Instant?) {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard var entry = state.entries[address] else { return nil }
            if let sentAt { entry.lastSend = sentAt }
            let next = entry.waiters.popFirst()
            entry.busy = next != nil  // handed to the next waiter as it is
            state.entries[address] = entry
            return next
        }
        next?.resume()
    }

    /// Forgets addresses nobody holds whose pace is long past.
    private func forgetIdle(_ state: inout State) {
        let now = clock.now
        let horizon = interval + margin
        state.entries = state.entries.filter { _, entry in
            entry.busy || !entry.waiters.isEmpty || (entry.lastSend.map { now - $0 < horizon } ?? false)
        }
    }
}
