import DequeModule
import Synchronization

/// Tasks waiting, first come first served, for what an owner hands out (a connection, a place for a send, room to
/// publish), each leaving the queue as soon as its task is cancelled.
///
/// The queue lives in the owner's locked state, so that looking for something free and joining the queue are one
/// step, and so are giving something back and handing it to the next waiter. ``wait(join:leave:)`` does the rest:
/// the joining, the leaving on cancellation (the task then throws `CancellationError`), and the race between them.
/// A waiter handed its value before its task was cancelled keeps it: the owner's release and the cancellation take
/// the waiter under the same lock, and only one of them finds it.
public struct WaiterQueue<Value: Sendable>: Sendable {
    public typealias Continuation = CheckedContinuation<Value, any Error>

    /// A waiter's place in the queue, known before it joins (so that a cancellation can find it).
    public struct Ticket: Hashable, Sendable {
        fileprivate let id: UInt64
    }

    private var order: Deque<UInt64> = []
    private var waiting: [UInt64: Continuation] = [:]

    public init() {}

    public var isEmpty: Bool { waiting.isEmpty }
    public var count: Int { waiting.count }

    /// Joins the queue, at its end.
    public mutating func append(_ continuation: Continuation, ticket: Ticket) {
        order.append(ticket.id)
        waiting[ticket.id] = continuation
    }

    /// The longest waiting, taken out of the queue.
    public mutating func popFirst() -> Continuation? {
        while let id = order.popFirst() {
            if let continuation = waiting.removeValue(forKey: id) { return continuation }
        }
        return nil
    }

    /// The waiter with this ticket, taken out of the queue; nil when it is not in it (never joined, or handed its
    /// value already).
    public mutating func remove(_ ticket: Ticket) -> Continuation? {
        guard let continuation = waiting.removeValue(forKey: ticket.id) else { return nil }
        // The ticket's place in `order` is skipped by `popFirst`; compacted once most places are such.
        if order.count > 2 * waiting.count + 16 { order = Deque(order.filter { waiting[$0] != nil }) }
        return continuation
    }

    /// Every waiter, in order, taken out of the queue (the owner is closing).
    public mutating func removeAll() -> [Continuation] {
        let all = order.compactMap { waiting[$0] }
        order.removeAll()
        waiting.removeAll()
        return all
    }

    /// Waits in a queue kept in an owner's locked state. `join` runs once, with the caller's ticket and
    /// continuation: under the owner's lock it either resumes the continuation at once (something is free, or the
    /// owner is closed) or appends it to the queue with the ticket. `leave` runs if the task is cancelled: under
    /// the owner's lock it takes the ticket's waiter out of the queue (``remove(_:)``) and returns it, and it is
    /// resumed with `CancellationError`.
    public static func wait(
        join: (Ticket, Continuation) -> Void,
        leave: @escaping @Sendable (Ticket) -> Continuation?
    ) async throws -> Value {
        let ticket = Ticket(id: ticketCounter.add(1, ordering: .relaxed).newValue)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: Continuation) in
                join(ticket, continuation)
                // Cancelled before it joined: the handler ran and found nothing to take out.
                if Task.isCancelled, let queued = leave(ticket) { queued.resume(throwing: CancellationError()) }
            }
        } onCancel: {
            leave(ticket)?.resume(throwing: CancellationError())
        }
    }
}

private let ticketCounter = Atomic<UInt64>(0)
