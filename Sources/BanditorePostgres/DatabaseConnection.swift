import CLibPQ
import Dispatch
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One libpq connection.
///
/// Every libpq call on the handle runs on the connection's own serial dispatch queue, one call sequence at a time,
/// never on Swift's cooperative pool. Cancelling the calling task cancels the running query through `PQcancel`,
/// which libpq documents as safe from another thread. Most code uses a ``DatabasePool`` (the pool) instead.
public final class DatabaseConnection: @unchecked Sendable {
    // @unchecked: `handle` and `statements` are read and written only inside blocks on `queue` (serial);
    // `cancelKey` is behind a Mutex; everything else is immutable.
    private let queue: DispatchQueue
    private var handle: OpaquePointer?
    private var statements = PreparedStatements()
    private let cancelKey = Mutex<CancelKey?>(nil)
    public let configuration: DatabaseConfiguration
    let logger: Logger

    private struct CancelKey: @unchecked Sendable {  // a PGcancel*, usable from any thread (libpq docs)
        let pointer: OpaquePointer
    }

    private init(configuration: DatabaseConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.queue = DispatchQueue(label: "banditore.postgres")
    }

    deinit {
        if let handle { PQfinish(handle) }
        if let key = cancelKey.withLock({ $0 }) { PQfreeCancel(key.pointer) }
    }

    /// Connects, failing within `connectTimeout` with the server's or the library's message.
    public static func connect(_ configuration: DatabaseConfiguration, logger: Logger) async throws
        -> DatabaseConnection
    {
        let connection = DatabaseConnection(configuration: configuration, logger: logger)
        try await connection.onQueue { connection.open() }.get()
        return connection
    }

    private func open() -> Result<Void, DatabaseError> {
        let keys = ["dbname", "connect_timeout", "application_name", "options", "client_encoding"]
        let values = [
            configuration.url, "\(configuration.connectTimeout)", configuration.applicationName,
            "-c TimeZone=UTC -c DateStyle=ISO", "UTF8",
        ]
        let cKeys = keys.map { UnsafePointer(strdup($0)) } + [nil]
        let cValues = values.map { UnsafePointer(strdup($0)) } + [nil]
        defer {
            for p in cKeys { free(UnsafeMutablePointer(mutating: p)) }
            for p in cValues { free(UnsafeMutablePointer(mutating: p)) }
        }
        let conn = PQconnectdbParams(cKeys, cValues, 1)
        guard let conn, PQstatus(conn) == CONNECTION_OK else {
            let message = conn.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            if let conn { PQfinish(conn) }
            return .failure(
                DatabaseError(.connectionFailed, message: "\(configuration.redactedURL): \(trimmed(message))")
            )
        }
        handle = conn
        // The server's notices and an idle connection's farewell go to the log, not to standard error as raw text.
        // The connection outlives its handle (PQfinish runs in deinit), so an unretained pointer is safe.
        PQsetNoticeProcessor(
            conn,
            { context, message in
                guard let context, let message else { return }
                let connection = Unmanaged<DatabaseConnection>.fromOpaque(context).takeUnretainedValue()
                connection.logNotice(String(cString: message))
            }, Unmanaged.passUnretained(self).toOpaque())
        refreshCancelKey()
        return .success(())
    }

    private func logNotice(_ text: String) {
        let message = trimmed(text)
        let routine = ["NOTICE:", "INFO:", "LOG:", "DEBUG"].contains { message.hasPrefix($0) }
        logger.log(level: routine ? .debug : .warning, "PostgreSQL notice", metadata: ["postgres.notice": "\(message)"])
    }

    private func refreshCancelKey() {
        let key = handle.flatMap { PQgetCancel($0) }.map(CancelKey.init)
        let old = cancelKey.withLock { state in
            defer { state = key }
            return state
        }
        if let old { PQfreeCancel(old.pointer) }
    }

    /// Closes the connection.
    public func close() async {
        _ = await onQueue {
            if let handle = self.handle { PQfinish(handle) }
            self.handle = nil
        }
    }

    // MARK: Queries

    /// Runs a query and returns all its rows.
    ///
    /// A query with parameters is prepared on the connection the first time its text is seen and executed as the
    /// prepared statement from then on, so that the server parses it once per connection (and, for the statements
    /// a service runs over and over, plans it once): see ``PreparedStatements``.
    @discardableResult
    public func query(_ query: SQLQuery) async throws -> SQLResult {
        try await run { conn in
            guard !query.binds.isEmpty, let name = try self.preparedName(for: query, conn: conn) else {
                let result = Params(query.binds).withPointers { values in
                    PQexecParams(conn, query.sql, Int32(query.binds.count), nil, values, nil, nil, 0)
                }
                return try self.collect(result, conn: conn, sql: query.sql)
            }
            do {
                return try self.executePrepared(name, query, conn: conn)
            } catch let error as DatabaseError where self.statements.isStale(error) {
                // The statement's tables changed under it (or it is gone): forget it. Outside a transaction
                // nothing ran, so it is prepared again and run once more; inside one the caller sees the error.
                self.statements.forget(query.sql)
                guard PQtransactionStatus(conn) == PQTRANS_IDLE,
                    let again = try self.preparedName(for: query, conn: conn)
                else { throw error }
                return try self.executePrepared(again, query, conn: conn)
            }
        }
    }

    /// The name of `query`'s prepared statement, preparing it first if needed; nil when the connection holds as
    /// many as it keeps (the query then runs unprepared). Runs on the queue.
    private func preparedName(for query: SQLQuery, conn: OpaquePointer) throws -> String? {
        if let name = statements.name(for: query.sql) { return name }
        guard let name = statements.reserve(query.sql) else { return nil }
        let result = PQprepare(conn, name, query.sql, Int32(query.binds.count), nil)
        do {
            _ = try collect(result, conn: conn, sql: query.sql)
        } catch {
            statements.forget(query.sql)
            throw error
        }
        return name
    }

    private func executePrepared(_ name: String, _ query: SQLQuery, conn: OpaquePointer) throws -> SQLResult {
        let result = Params(query.binds).withPointers { values in
            PQexecPrepared(conn, name, Int32(query.binds.count), values, nil, nil, 0)
        }
        do {
            return try collect(result, conn: conn, sql: query.sql)
        } catch let error as DatabaseError where error.code == .connectionClosed {
            statements.removeAll()
            throw error
        }
    }

    /// How many statements this connection holds prepared (for tests and diagnostics).
    public var preparedStatementCount: Int {
        get async { await onQueue { self.statements.count } }
    }

    /// Runs one or more statements without parameters (a migration file, say) in one round trip.
    public func execute(script sql: String) async throws {
        try await run { conn in
            // PQexec returns the last result (the first failing one stops the script).
            _ = try self.collect(PQexec(conn, sql), conn: conn, sql: String(sql.prefix(200)))
        }
    }

    // MARK: Transactions

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    public func withTransaction<T>(_ body: (DatabaseConnection) async throws -> T) async throws -> T {
        try await query("BEGIN")
        do {
            let value = try await body(self)
            try await query("COMMIT")
            return value
        } catch {
            _ = try? await query("ROLLBACK")
            throw error
        }
    }

    // MARK: Streaming

    /// Runs a query in single-row mode and hands its rows to `body` as they arrive, so that memory does not grow
    /// with the result. Rows cross from the connection's queue in batches of `batchSize`. If `body` stops early, the
    /// query is cancelled and the connection drained before this returns.
    public func withRows<T>(
        _ query: SQLQuery,
        batchSize: Int = 1000,
        _ body: (SQLRowSequence) async throws -> T
    ) async throws -> T {
        try await run { conn in
            let sent = Params(query.binds).withPointers { values in
                PQsendQueryParams(conn, query.sql, Int32(query.binds.count), nil, values, nil, nil, 0)
            }
            guard sent == 1 else { throw self.connectionError(conn, sql: query.sql) }
            guard PQsetSingleRowMode(conn) == 1 else {
                throw DatabaseError(.server, message: "could not enter single-row mode", query: query.sql)
            }
        }
        let state = RowStreamState()
        let rows = SQLRowSequence(connection: self, state: state, batchSize: max(1, batchSize), sql: query.sql)
        do {
            let value = try await body(rows)
            try await finishStream(state, sql: query.sql)
            return value
        } catch {
            try? await finishStream(state, sql: query.sql)
            throw error
        }
    }

    /// Reads up to `limit` rows of a running single-row query.
    func nextBatch(_ state: RowStreamState, limit: Int, sql: String) async throws -> [SQLRow] {
        try await run { conn in
            var rows: [SQLRow] = []
            rows.reserveCapacity(limit)
            while rows.count < limit, !state.done {
                guard let result = PQgetResult(conn) else {
                    state.done = true
                    break
                }
                defer { PQclear(result) }
                switch PQresultStatus(result) {
                case PGRES_SINGLE_TUPLE:
                    if state.columns == nil { state.columns = Self.columns(result) }
                    rows.append(SQLRow(columns: state.columns!, values: Self.values(result, row: 0)))
                case PGRES_TUPLES_OK, PGRES_COMMAND_OK:
                    state.done = true
                    while let rest = PQgetResult(conn) { PQclear(rest) }
                default:
                    state.done = true
                    let error = self.serverError(result, conn: conn, sql: sql)
                    while let rest = PQgetResult(conn) { PQclear(rest) }
                    throw error
                }
            }
            return rows
        }
    }

    private func finishStream(_ state: RowStreamState, sql: String) async throws {
        guard !state.done else { return }
        cancelRunningQuery()
        _ = try await run { conn in
            while let result = PQgetResult(conn) { PQclear(result) }
            state.done = true
        }
    }

    // MARK: COPY

    /// Bulk-loads rows with `COPY … FROM STDIN` (text format), sent in chunks of about `chunkSize` bytes.
    ///
    /// - Parameters:
    ///   - table: the table, as written in SQL (quote it yourself if it needs quoting).
    ///   - columns: the columns the values fill, in order.
    ///   - rows: one array of values per row (nil is NULL).
    /// - Returns: the number of rows copied.
    @discardableResult
    public func copy<Rows: Sequence>(
        into table: String,
        columns: [String],
        rows: Rows,
        chunkSize: Int = 64 * 1024
    ) async throws -> Int where Rows.Element == [(any SQLEncodable)?] {
        let sql = try await beginCopy(into: table, columns: columns)
        // While one chunk is sent on the connection's queue, the next is encoded here.
        var buffer: [UInt8] = []
        buffer.reserveCapacity(chunkSize + 4096)
        var sending: Task<Void, any Error>?
        do {
            for row in rows {
                CopyText.append(row, to: &buffer)
                if buffer.count >= chunkSize {
                    try await sending?.value
                    let chunk = buffer
                    sending = Task { try await self.sendCopyData(chunk, sql: sql) }
                    buffer.removeAll(keepingCapacity: true)
                }
            }
            try await sending?.value
            if !buffer.isEmpty { try await sendCopyData(buffer, sql: sql) }
        } catch {
            _ = try? await sending?.value
            _ = try? await endCopy(error: "aborted by the client", sql: sql)
            throw error
        }
        return try await endCopy(error: nil, sql: sql)
    }

    /// Bulk-loads `text`, rows already in COPY's text format (columns separated by tabs, each row ending in a
    /// newline, backslashes, tabs and newlines in values escaped): for callers that write many rows of a known
    /// shape and would spend more on ``copy(into:columns:rows:chunkSize:)``'s per-value encoding than PostgreSQL
    /// spends on the rows. Returns the number of rows copied.
    @discardableResult
    public func copy(into table: String, columns: [String], text: [UInt8]) async throws -> Int {
        let sql = try await beginCopy(into: table, columns: columns)
        do {
            if !text.isEmpty { try await sendCopyData(text, sql: sql) }
        } catch {
            _ = try? await endCopy(error: "aborted by the client", sql: sql)
            throw error
        }
        return try await endCopy(error: nil, sql: sql)
    }

    private func beginCopy(into table: String, columns: [String]) async throws -> String {
        let sql = "COPY \(table) (\(columns.joined(separator: ", "))) FROM STDIN"
        try await run { conn in
            let result = PQexec(conn, sql)
            guard let result else { throw self.connectionError(conn, sql: sql) }
            defer { PQclear(result) }
            guard PQresultStatus(result) == PGRES_COPY_IN else {
                throw self.serverError(result, conn: conn, sql: sql)
            }
        }
        return sql
    }

    private func sendCopyData(_ chunk: [UInt8], sql: String) async throws {
        try await run { conn in
            let rc = chunk.withUnsafeBufferPointer { buffer in
                buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                    PQputCopyData(conn, $0, Int32(buffer.count))
                }
            }
            guard rc == 1 else { throw self.connectionError(conn, sql: sql) }
        }
    }

    private func endCopy(error: String?, sql: String) async throws -> Int {
        try await run { conn in
            guard PQputCopyEnd(conn, error) == 1 else { throw self.connectionError(conn, sql: sql) }
            var outcome: Result<Int, DatabaseError> = .success(0)
            while let result = PQgetResult(conn) {
                if PQresultStatus(result) == PGRES_COMMAND_OK {
                    outcome = .success(Int(String(cString: PQcmdTuples(result))) ?? 0)
                } else if case .success = outcome {
                    outcome = .failure(self.serverError(result, conn: conn, sql: sql))
                }
                PQclear(result)
            }
            return try outcome.get()
        }
    }

    // MARK: Health

    /// Whether the connection still works; notices a server that went away while the connection sat idle, and
    /// tries one reset then.
    func ensureAlive() async -> Bool {
        await onQueue { () -> Bool in
            guard let conn = self.handle else { return false }
            // A server that went away while the connection was idle left its farewell (an error message) and then
            // the end of the stream: one read takes in the message, the next meets the end. Reading twice finds
            // both (a live idle connection has nothing to read, and neither read blocks).
            if PQstatus(conn) == CONNECTION_OK, PQconsumeInput(conn) == 1, PQconsumeInput(conn) == 1,
                PQstatus(conn) == CONNECTION_OK
            {
                return true
            }
            self.logger.info("PostgreSQL connection lost; reconnecting")
            PQreset(conn)
            self.statements.removeAll()  // a new session: what the old one prepared is gone
            self.refreshCancelKey()
            return PQstatus(conn) == CONNECTION_OK
        }
    }

    /// Whether the connection is usable for the pool: open, and outside any transaction.
    func readyForReuse() async -> Bool {
        let status = await onQueue { () -> (ok: Bool, inTransaction: Bool) in
            guard let conn = self.handle, PQstatus(conn) == CONNECTION_OK else { return (false, false) }
            return (true, PQtransactionStatus(conn) != PQTRANS_IDLE)
        }
        guard status.ok else { return false }
        if status.inTransaction { return (try? await query("ROLLBACK")) != nil }
        return true
    }

    // MARK: - Internals

    private func onQueue<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: body()) }
        }
    }

    private func run<T: Sendable>(_ body: @escaping @Sendable (OpaquePointer) throws -> T) async throws -> T {
        try Task.checkCancellation()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                queue.async {
                    guard let conn = self.handle else {
                        continuation.resume(throwing: DatabaseError(.closed))
                        return
                    }
                    continuation.resume(with: Result { try body(conn) })
                }
            }
        } onCancel: {
            cancelRunningQuery()
        }
    }

    private func cancelRunningQuery() {
        cancelKey.withLock { key in
            guard let key else { return }
            var buffer = [CChar](repeating: 0, count: 256)
            _ = PQcancel(key.pointer, &buffer, 256)
        }
    }

    private func collect(_ result: OpaquePointer?, conn: OpaquePointer, sql: String) throws -> SQLResult {
        guard let result else { throw connectionError(conn, sql: sql) }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return SQLResult(rows: [], affectedRows: Int(String(cString: PQcmdTuples(result))) ?? 0)
        case PGRES_TUPLES_OK:
            let columns = Self.columns(result)
            let count = Int(PQntuples(result))
            var rows: [SQLRow] = []
            rows.reserveCapacity(count)
            for r in 0..<count { rows.append(SQLRow(columns: columns, values: Self.values(result, row: r))) }
            return SQLResult(rows: rows, affectedRows: count)
        default:
            throw serverError(result, conn: conn, sql: sql)
        }
    }

    private static func columns(_ result: OpaquePointer) -> SQLColumns {
        SQLColumns(names: (0..<PQnfields(result)).map { String(cString: PQfname(result, $0)) })
    }

    private static func values(_ result: OpaquePointer, row: Int) -> [String?] {
        let r = Int32(row)
        return (0..<PQnfields(result)).map { c in
            PQgetisnull(result, r, c) == 1 ? nil : String(cString: PQgetvalue(result, r, c))
        }
    }

    private func serverError(_ result: OpaquePointer, conn: OpaquePointer, sql: String) -> DatabaseError {
        func field(_ code: Character) -> String? {
            PQresultErrorField(result, Int32(code.asciiValue!)).map { String(cString: $0) }
        }
        let broken = PQstatus(conn) != CONNECTION_OK
        return DatabaseError(
            broken ? .connectionClosed : .server,
            sqlState: field("C"),
            message: field("M") ?? trimmed(String(cString: PQerrorMessage(conn))),
            detail: field("D"),
            constraint: field("n"),
            query: sql
        )
    }

    private func connectionError(_ conn: OpaquePointer, sql: String) -> DatabaseError {
        DatabaseError(
            PQstatus(conn) == CONNECTION_OK ? .server : .connectionClosed,
            message: trimmed(String(cString: PQerrorMessage(conn))), query: sql
        )
    }
}

private func trimmed(_ message: String) -> String {
    message.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// The statements a connection has prepared, by their SQL text; touched on the connection's queue only.
///
/// Bounded: a connection keeps at most `limit` statements (the services run a few dozen distinct queries; text
/// that varies with its input, should any, must not grow the server's memory without end), and runs anything past
/// that unprepared. Plans follow PostgreSQL's `plan_cache_mode`: custom plans for the first five executions, then
/// the generic plan when it costs no more than they did.
struct PreparedStatements {
    static let limit = 256
    private var names: [String: String] = [:]
    private var serial = 0

    var count: Int { names.count }

    func name(for sql: String) -> String? { names[sql] }

    /// A new statement's name, or nil when the connection is full.
    mutating func reserve(_ sql: String) -> String? {
        guard names.count < Self.limit else { return nil }
        serial += 1
        let name = "banditore_\(serial)"
        names[sql] = name
        return name
    }

    mutating func forget(_ sql: String) { names[sql] = nil }

    mutating func removeAll() { names.removeAll() }

    /// A statement prepared before its tables changed shape (`cached plan must not change result type`), or one
    /// the session no longer has.
    func isStale(_ error: DatabaseError) -> Bool {
        error.sqlState == "0A000" && (error.message ?? "").contains("cached plan") || error.sqlState == "26000"
    }
}

/// Query parameters as C strings for the duration of one call.
private struct Params {
    let values: [String?]
    init(_ values: [String?]) { self.values = values }

    func withPointers<R>(_ body: ([UnsafePointer<CChar>?]) throws -> R) rethrows -> R {
        let pointers = values.map { $0.map { UnsafePointer(strdup($0)!) } }
        defer { for p in pointers { if let p { free(UnsafeMutablePointer(mutating: p)) } } }
        return try body(pointers)
    }
}

/// The progress of a streamed query; touched on the connection's queue only (one call at a time).
final class RowStreamState: @unchecked Sendable {
    var done = false
    var columns: SQLColumns?
}

/// The rows of a streamed query; iterate it once, inside ``DatabaseConnection/withRows(_:batchSize:_:)``.
public struct SQLRowSequence: AsyncSequence, Sendable {
    public typealias Element = SQLRow
    let connection: DatabaseConnection
    let state: RowStreamState
    let batchSize: Int
    let sql: String

    public func makeAsyncIterator() -> Iterator {
        Iterator(sequence: self)
    }

    public struct Iterator: AsyncIteratorProtocol {
        let sequence: SQLRowSequence
        var buffer: [SQLRow] = []
        var index = 0

        public mutating func next() async throws -> SQLRow? {
            if index == buffer.count {
                guard !sequence.state.done else { return nil }
                buffer = try await sequence.connection.nextBatch(
                    sequence.state, limit: sequence.batchSize, sql: sequence.sql
                )
                index = 0
                if buffer.isEmpty { return nil }
            }
            defer { index += 1 }
            return buffer[index]
        }
    }
}

/// COPY's text format: tab-separated, `\N` for NULL, backslash escapes.
enum CopyText {
    static func append(_ row: [(any SQLEncodable)?], to buffer: inout [UInt8]) {
        for (index, value) in row.enumerated() {
            if index > 0 { buffer.append(9) }
            guard let text = value?.postgresText else {
                buffer.append(UInt8(ascii: "\\"))
                buffer.append(UInt8(ascii: "N"))
                continue
            }
            let utf8 = text.utf8
            // Most values need no escaping: copy them whole.
            if !utf8.contains(where: { $0 == 92 || $0 == 9 || $0 == 10 || $0 == 13 }) {
                buffer.append(contentsOf: utf8)
                continue
            }
            for byte in utf8 {
                switch byte {
                case 92:
                    buffer.append(92)
                    buffer.append(92)
                case 9:
                    buffer.append(92)
                    buffer.append(UInt8(ascii: "t"))
                case 10:
                    buffer.append(92)
                    buffer.append(UInt8(ascii: "n"))
                case 13:
                    buffer.append(92)
                    buffer.append(UInt8(ascii: "r"))
                default: buffer.append(byte)
                }
            }
        }
        buffer.append(10)
    }
}
