import BanditoreConcurrency
import Synchronization
import Testing

/// A one-place resource built on WaiterQueue, as the connection pools and the in-flight bound use it.
private final class OnePlace: Sendable {
    private struct State {
        var free = true
        var waiters = WaiterQueue<Int>()
        var handedOut = 0
    }
    private let state = Mutex(State())

    /// Waits for the place; returns how many were handed out before it.
    func take() async throws -> Int {
        try await WaiterQueue<Int>.wait { ticket, continuation in
            let now = state.withLock { state -> Int? in
                if state.free {
                    state.free = false
                    state.handedOut += 1
                    return state.handedOut
                }
                state.waiters.append(continuation, ticket: ticket)
                return nil
            }
            if let now { continuation.resume(returning: now) }
        } leave: { ticket in
            self.state.withLock { $0.waiters.remove(ticket) }
        }
    }

    func give() {
        let next = state.withLock { state -> (WaiterQueue<Int>.Continuation, Int)? in
            guard let waiter = state.waiters.popFirst() else {
                state.free = true
                return nil
            }
            state.handedOut += 1
            return (waiter, state.handedOut)
        }
        if let (waiter, count) = next { waiter.resume(returning: count) }
    }

    var waiting: Int { state.withLock { $0.waiters.count } }
}

@Suite struct WaiterQueueTests {
    @Test func waitersAreServedFirstComeFirstServed() async throws {
        let place = OnePlace()
        #expect(try await place.take() == 1)
        let first = Task { try await place.take() }
        while place.waiting < 1 { await Task.yield() }
        let second = Task { try await place.take() }
        while place.waiting < 2 { await Task.yield() }
        place.give()
        #expect(try await first.value == 2)
        place.give()
        #expect(try await second.value == 3)
    }

    @Test func aCancelledWaiterLeavesAtOnceAndThePlaceGoesToTheNext() async throws {
        let place = OnePlace()
        _ = try await place.take()
        let cancelled = Task { try await place.take() }
        while place.waiting < 1 { await Task.yield() }
        let next = Task { try await place.take() }
        while place.waiting < 2 { await Task.yield() }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        #expect(place.waiting == 1)
        place.give()
        #expect(try await next.value == 2)
    }

    @Test func aTaskCancelledBeforeItWaitsNeverJoins() async throws {
        let place = OnePlace()
        _ = try await place.take()
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await place.take()
        }
        await #expect(throws: CancellationError.self) { try await early.value }
        #expect(place.waiting == 0)
        place.give()
        #expect(try await place.take() == 2)
    }

    @Test func aWaiterHandedItsValueKeepsItWhenCancelledAfterwards() async throws {
        let place = OnePlace()
        _ = try await place.take()
        let waiter = Task { try await place.take() }
        while place.waiting < 1 { await Task.yield() }
        place.give()
        waiter.cancel()
        #expect(try await waiter.value == 2)
    }

    @Test func manyWaitersCancelledAmongServedOnesNeitherLoseNorRepeatAPlace() async throws {
        let place = OnePlace()
        _ = try await place.take()
        var tasks: [Task<Int, any Error>] = []
        for _ in 0..<200 { tasks.append(Task { try await place.take() }) }
        while place.waiting < 200 { await Task.yield() }
        for (index, task) in tasks.enumerated() where index % 2 == 0 { task.cancel() }
        var served: [Int] = []
        for (index, task) in tasks.enumerated() where index % 2 == 1 {
            place.give()
            served.append(try await task.value)
        }
        #expect(served == Array(2...101))
        for (index, task) in tasks.enumerated() where index % 2 == 0 {
            await #expect(throws: CancellationError.self) { try await task.value }
        }
        #expect(place.waiting == 0)
    }
}
