import BanditoreConcurrency
import Logging
import ServiceLifecycle
import Synchronization

/// A small pool of ``DatabaseConnection``s.
///
/// Connections open on demand up to `maxConnections`; a caller beyond that waits for one to come back. An idle
/// connection whose server went away (a restart, say) is noticed when it is taken and reconnected, so the pool
/// carries on after a database restart. A connection left inside a transaction is rolled back before reuse.
public final class DatabasePool: Sendable, Service {
    private struct State {
        var idle: [DatabaseConnection] = []
        var open = 0
        /// Callers waiting for a connection: handed one that came back, or nil when a slot was freed (they open one).
        var waiters = WaiterQueue<DatabaseConnection?>()
        var closed = false
    }

    public let configuration: DatabaseConfiguration
    private let logger: Logger
    private let state = Mutex(State())

    public init(configuration: DatabaseConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public convenience init(url: String, logger: Logger) throws {
        self.init(configuration: try DatabaseConfiguration(url: url), logger: logger)
    }

    // MARK: Use

    /// Lends a connection to `body` and takes it back afterwards.
    public func withConnection<T>(_ body: (DatabaseConnection) async throws -> T) async throws -> T {
        let connection = try await acquire()
        do {
            let value = try await body(connection)
            await release(connection)
            return value
        } catch {
            await release(connection)
            throw error
        }
    }

    /// Runs one query on a pooled connection.
    @discardableResult
    public func query(_ query: SQLQuery) async throws -> SQLResult {
        try await withConnection { try await $0.query(query) }
    }

    /// Runs `body` in a transaction on one pooled connection.
    public func withTransaction<T>(_ body: (DatabaseConnection) async throws -> T) async throws -> T {
        try await withConnection { try await $0.withTransaction(body) }
    }

    /// Whether the database answers (for readiness checks). With a deadline, no answer by then (every connection
    /// busy, a server that does not answer) is `false` at the deadline rather than a wait; the query itself carries
    /// on in the background and gives its connection back when it ends.
    public func ping(within deadline: Duration? = nil) async -> Bool {
        guard let deadline else { return (try? await query("SELECT 1")) != nil }
        let answer = FirstAnswer()
        return await withCheckedContinuation { continuation in
            answer.wait(continuation)
            let timer = Task {
                try? await Task.sleep(for: deadline)
                answer.give(false)
            }
            Task {
                answer.give((try? await self.query("SELECT 1")) != nil)
                timer.cancel()
            }
        }
    }

    /// Closes every connection; later calls fail with ``DatabaseError/Code/closed``.
    public func close() async {
        let (idle, waiters) = state.withLock { state in
            state.closed = true
            defer { state.idle.removeAll() }
            return (state.idle, state.waiters.removeAll())
        }
        for waiter in waiters { waiter.resume(throwing: DatabaseError(.closed)) }
        for connection in idle { await connection.close() }
    }

    public func run() async throws {
        try? await gracefulShutdown()
        await close()
    }

    // MARK: Internals

    private enum Next {
        case reuse(DatabaseConnection)
        case open
        case wait
    }

    private func acquire() async throws -> DatabaseConnection {
        while true {
            let next = try state.withLock { state -> Next in
                if state.closed { throw DatabaseError(.closed) }
                if let connection = state.idle.popLast() { return .reuse(connection) }
                if state.open < configuration.maxConnections {
                    state.open += 1
                    return .open
                }
                return .wait
            }
            switch next {
            case .reuse(let connection):
                if await connection.ensureAlive() { return connection }
                await discard(connection)
            case .open:
                do {
                    return try await DatabaseConnection.connect(configuration, logger: logger)
                } catch {
                    slotFreed()
                    throw error
                }
            case .wait:
                let handed = try await WaiterQueue<DatabaseConnection?>.wait { ticket, continuation in
                    let closed = state.withLock { state -> Bool in
                        if state.closed { return true }
                        state.waiters.append(continuation, ticket: ticket)
                        return false
                    }
                    if closed { continuation.resume(throwing: DatabaseError(.closed)) }
                } leave: { ticket in
                    self.state.withLock { $0.waiters.remove(ticket) }
                }
                if let handed {
                    if await handed.ensureAlive() { return handed }
                    await discard(handed)
                }
            // nil: a slot was freed; go round and open one.
            }
        }
    }

    private func release(_ connection: DatabaseConnection) async {
        guard await connection.readyForReuse() else {
            await discard(connection)
            return
        }
        let (waiter, closed) = state.withLock { state -> (WaiterQueue<DatabaseConnection?>.Continuation?, Bool) in
            if state.closed { return (nil, true) }
            if let waiter = state.waiters.popFirst() { return (waiter, false) }
            state.idle.append(connection)
            return (nil, false)
        }
        if closed {
            await discard(connection)
        } else {
            waiter?.resume(returning: connection)
        }
    }

    private func discard(_ connection: DatabaseConnection) async {
        await connection.close()
        slotFreed()
    }

    private func slotFreed() {
        let waiter = state.withLock { state -> WaiterQueue<DatabaseConnection?>.Continuation? in
            state.open -= 1
            return state.waiters.popFirst()
        }
        waiter?.resume(returning: nil)
    }
}

/// Resumes a waiter with the first of several answers; the later ones are dropped.
private final class FirstAnswer: Sendable {
    private let waiter = Mutex<CheckedContinuation<Bool, Never>?>(nil)

    func wait(_ continuation: CheckedContinuation<Bool, Never>) {
        waiter.withLock { $0 = continuation }
    }

    func give(_ answer: Bool) {
        let continuation = waiter.withLock { waiter in
            defer { waiter = nil }
            return waiter
        }
        continuation?.resume(returning: answer)
    }
}
