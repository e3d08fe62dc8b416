import BanditoreConcurrency
import CRabbitMQ
import DequeModule
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A request to the connection's thread.
enum Command: Sendable {
    case publish(PublishRequest)
    /// Completes when every publish enqueued before it is confirmed or failed.
    case barrier(CheckedContinuation<Void, any Error>)
    case settle(channel: UInt16, generation: UInt64, tag: UInt64, Settlement)
    /// Runs `work` on the connection's thread while connected; `fail` is called instead when it cannot run.
    case perform(work: @Sendable (Worker) -> Void, fail: @Sendable (AMQPError) -> Void)
    case cancelConsumer(id: Int)
    case shutdown(CheckedContinuation<Void, Never>)
}

struct PublishRequest: Sendable {
    var exchange: String
    var routingKey: String
    var mandatory: Bool
    var message: AMQPMessage
    /// Resumed when this message is confirmed (nil: a failure is reported by the next `waitForConfirms`).
    var waiter: CheckedContinuation<Void, any Error>?
}

/// The state shared between callers (any task) and the connection's thread, behind one lock.
///
/// Callers only enqueue commands and wait for room among the unconfirmed publishes; everything that touches the
/// rabbitmq-c handle happens on the thread, in ``Worker``.
final class ConnectionCore: Sendable {
    struct Shared {
        var commands: Deque<Command> = []
        var workerSleeping = false
        var connected = false
        var closed = false
        var inFlight = 0
        var roomWaiters = WaiterQueue<Void>()
        var nextConsumerID = 1
    }

    let shared = Mutex(Shared())
    let maxUnconfirmed: Int
    /// Wakes the thread from `poll` when a command arrives.
    let wakeFD: Int32

    init(maxUnconfirmed: Int) {
        self.maxUnconfirmed = max(1, maxUnconfirmed)
        self.wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
    }

    deinit { close(wakeFD) }

    var isConnected: Bool { shared.withLock { $0.connected && !$0.closed } }

    func makeConsumerID() -> Int {
        shared.withLock { state in
            defer { state.nextConsumerID += 1 }
            return state.nextConsumerID
        }
    }

    /// Hands a command to the thread, or fails it at once when the connection is closed.
    func enqueue(_ command: Command) {
        let (accepted, wake) = shared.withLock { state -> (Bool, Bool) in
            guard !state.closed else { return (false, false) }
            state.commands.append(command)
            let wake = state.workerSleeping
            state.workerSleeping = false
            return (true, wake)
        }
        if !accepted {
            Self.fail(command, with: AMQPError(.closed))
        } else if wake {
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
        }
    }

    /// Takes up to `limit` queued commands.
    func takeCommands(limit: Int) -> [Command] {
        shared.withLock { state in
            let count = min(limit, state.commands.count)
            guard count > 0 else { return [] }
            let taken = Array(state.commands.prefix(count))
            state.commands.removeFirst(count)
            return taken
        }
    }

    /// Marks the thread as about to sleep unless commands are waiting; returns whether it may sleep.
    func prepareToSleep() -> Bool {
        shared.withLock { state in
            if state.commands.isEmpty {
                state.workerSleeping = true
                return true
            }
            return false
        }
    }

    func didWake() {
        shared.withLock { $0.workerSleeping = false }
        var value: UInt64 = 0
        _ = read(wakeFD, &value, 8)
    }

    func setConnected(_ connected: Bool) {
        shared.withLock { $0.connected = connected }
    }

    /// Marks the connection closed and returns the commands that will never run.
    func markClosed() -> [Command] {
        let (left, waiters) = shared.withLock { state -> ([Command], [WaiterQueue<Void>.Continuation]) in
            state.closed = true
            state.connected = false
            let left = Array(state.commands)
            state.commands.removeAll()
            let waiters = state.roomWaiters.removeAll()
            return (left, waiters)
        }
        for waiter in waiters { waiter.resume() }
        return left
    }

    // MARK: Room among unconfirmed publishes

    /// Whether a publish may take a slot among the unconfirmed ones.
    private enum Admission {
        case admitted
        case full
        case refused(AMQPError)
    }

    /// Takes a slot when the connection is up and below `maxUnconfirmed`; call with the lock held.
    private func admit(_ state: inout Shared) -> Admission {
        if state.closed { return .refused(AMQPError(.closed)) }
        if !state.connected { return .refused(AMQPError(.notConnected)) }
        guard state.inFlight < maxUnconfirmed else { return .full }
        state.inFlight += 1
        return .admitted
    }

    /// Hands a publish to the thread in one step (slot, queue, wake-up, under one lock), waiting only while
    /// `maxUnconfirmed` publishes are unconfirmed.
    func enqueuePublish(_ request: PublishRequest) async throws {
        while true {
            let (admission, wake) = shared.withLock { state -> (Admission, Bool) in
                let admission = admit(&state)
                guard case .admitted = admission else { return (admission, false) }
                state.commands.append(.publish(request))
                let wake = state.workerSleeping
                state.workerSleeping = false
                return (admission, wake)
            }
            switch admission {
            case .admitted:
                if wake {
                    var one: UInt64 = 1
                    _ = write(wakeFD, &one, 8)
                }
                return
            case .refused(let error): throw error
            case .full: try await waitForRoom()
            }
        }
    }

    /// Takes a slot among the unconfirmed publishes, waiting for one; the caller enqueues its publish next.
    func reserveSlot() async throws {
        while true {
            switch shared.withLock({ admit(&$0) }) {
            case .admitted: return
            case .refused(let error): throw error
            case .full: try await waitForRoom()
            }
        }
    }

    /// Returns once fewer than `maxUnconfirmed` publishes are unconfirmed (or the connection closed).
    private func waitForRoom() async throws {
        try await WaiterQueue<Void>.wait { ticket, continuation in
            let resumeNow = shared.withLock { state -> Bool in
                if state.closed || state.inFlight < maxUnconfirmed { return true }
                state.roomWaiters.append(continuation, ticket: ticket)
                return false
            }
            if resumeNow { continuation.resume() }
        } leave: { ticket in
            self.shared.withLock { $0.roomWaiters.remove(ticket) }
        }
    }

    /// Gives back `count` slots, waking as many waiters.
    func releaseSlots(_ count: Int) {
        guard count > 0 else { return }
        let waiters = shared.withLock { state -> [WaiterQueue<Void>.Continuation] in
            state.inFlight -= count
            var woken: [WaiterQueue<Void>.Continuation] = []
            while woken.count < count, let waiter = state.roomWaiters.popFirst() { woken.append(waiter) }
            return woken
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Fails a command that will not run.
    static func fail(_ command: Command, with error: AMQPError) {
        switch command {
        case .publish(let request): request.waiter?.resume(throwing: error)
        case .barrier(let continuation): continuation.resume(throwing: error)
        case .perform(_, let fail): fail(error)
        case .shutdown(let continuation): continuation.resume()
        case .settle, .cancelConsumer: break
        }
    }
}
