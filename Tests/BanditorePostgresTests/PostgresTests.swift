import BanditorePostgres
import BanditoreStore
import BanditoreTesting
import Foundation
import Logging
import Testing

private let logger = Logger(label: "test.postgres")

private func makeClient(maxConnections: Int = 4) throws -> DatabasePool {
    try DatabasePool(
        configuration: DatabaseConfiguration(url: TestServers.databaseURL(), maxConnections: maxConnections),
        logger: logger
    )
}

/// A table of the test's own, dropped afterwards.
private func withTable<T>(
    _ client: DatabasePool,
    columns: String,
    _ body: (String) async throws -> T
) async throws -> T {
    let table = TestServers.uniqueName("t").replacingOccurrences(of: "-", with: "_")
    try await client.query("CREATE TABLE \(unescaped: table) (\(unescaped: columns))")
    do {
        let result = try await body(table)
        try await client.query("DROP TABLE \(unescaped: table)")
        return result
    } catch {
        _ = try? await client.query("DROP TABLE \(unescaped: table)")
        throw error
    }
}

private struct Payload: Codable, Sendable, Equatable {
    var topic: String
    var count: Int
    var tags: [String]
}

/// Resident memory of this process, from /proc.
private func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let pages = text.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

@Suite("PostgreSQL against the real server")
struct PostgresTests {
    @Test("parameters of every type we use round-trip, NULL included")
    func roundTrip() async throws {
        let client = try makeClient()
        try await withTable(
            client,
            columns: """
                id serial, t text, i bigint, i32 integer, b boolean, ts timestamptz, arr text[], nums bigint[],
                j jsonb, n text, d double precision, u uuid, raw bytea
                """
        ) { table in
            let text = #"l'avviso "urgente" \ 中文 — ATTIVA ISCRIZIONE, {a,b}"#
            let date = Date(timeIntervalSince1970: 1_767_261_600.123456)
            let array = ["farmacie", "protezione civile", #"con "virgolette""#, "中文", "a,b", #"back\slash"#, "{}", ""]
            let payload = Payload(topic: "scuola", count: 3, tags: ["sciopero", "mensa"])
            let uuid = UUID()
            let raw = SQLBytes([0, 1, 2, 254, 255])
            let none: String? = nil
            try await client.query(
                """
                INSERT INTO \(unescaped: table) (t, i, i32, b, ts, arr, nums, j, n, d, u, raw)
                VALUES (\(text), \(Int64.max), \(Int32.min), \(true), \(date), \(array), \([1, -2, 3]),
                        \(SQLJSON(payload)), \(none), \(3.25), \(uuid), \(raw))
                """
            )
            let row = try #require(try await client.query("SELECT * FROM \(unescaped: table)").first)
            #expect(try row.decode(String.self, column: "t") == text)
            #expect(try row.decode(Int64.self, column: "i") == Int64.max)
            #expect(try row.decode(Int32.self, column: "i32") == Int32.min)
            #expect(try row.decode(Bool.self, column: "b") == true)
            let readDate = try row.decode(Date.self, column: "ts")
            #expect(abs(readDate.timeIntervalSince1970 - date.timeIntervalSince1970) < 0.000_001)
            #expect(try row.decode([String].self, column: "arr") == array)
            #expect(try row.decode([Int].self, column: "nums") == [1, -2, 3])
            #expect(try row.decode(SQLJSON<Payload>.self, column: "j").value == payload)
            #expect(try row.decode(String?.self, column: "n") == nil)
            #expect(row.isNull(try #require(row.columns.index(of: "n"))))
            #expect(try row.decode(Double.self, column: "d") == 3.25)
            #expect(try row.decode(UUID.self, column: "u") == uuid)
            #expect(try row.decode(SQLBytes.self, column: "raw") == raw)
            #expect(throws: DatabaseError.self) { try row.decode(String.self, column: "n") }
            #expect(throws: DatabaseError.self) { try row.decode(Int.self, column: "t") }

            // The same through a tuple, and a timestamp with another offset read back in UTC.
            let (i, b) = try row.decode(Int.self, String.self)
            #expect(i == 1 && b == text)
            let offset = try #require(
                try await client.query("SELECT '2026-01-01 12:00:00+05:30'::timestamptz::text AS x").first
            )
            #expect(try offset.decode(Date.self, at: 0) == Date(timeIntervalSince1970: 1_767_249_000))
        }
    }

    @Test("a transaction rolls back when its body throws, and commits when it returns")
    func transactions() async throws {
        let client = try makeClient()
        struct Abort: Error {}
        try await withTable(client, columns: "v integer") { table in
            await #expect(throws: Abort.self) {
                try await client.withTransaction { connection in
                    try await connection.query("INSERT INTO \(unescaped: table) VALUES (1)")
                    throw Abort()
                }
            }
            _ = try await client.withTransaction { connection in
                try await connection.query("INSERT INTO \(unescaped: table) VALUES (2)")
            }
            let values = try await client.query("SELECT v FROM \(unescaped: table)").rows.map {
                try $0.decode(Int.self, at: 0)
            }
            #expect(values == [2])
        }
    }

    @Test("a connection left inside a transaction is rolled back before the pool lends it again")
    func poolRollsBackLeftoverTransaction() async throws {
        let client = try makeClient(maxConnections: 1)
        try await withTable(client, columns: "v integer") { table in
            try await client.withConnection { connection in
                try await connection.query("BEGIN")
                try await connection.query("INSERT INTO \(unescaped: table) VALUES (1)")
            }
            let count = try await client.query("SELECT count(*) FROM \(unescaped: table)").first!.decode(
                Int.self, at: 0)
            #expect(count == 0)
        }
    }

    @Test(
        "a query with parameters is prepared once per connection, and again after a reconnection or a change of its table"
    )
    func preparedStatements() async throws {
        let client = try makeClient(maxConnections: 1)
        let admin = try makeClient(maxConnections: 1)
        try await withTable(client, columns: "id integer, v text") { table in
            let select: @Sendable (Int) -> SQLQuery = { "SELECT * FROM \(unescaped: table) WHERE id = \($0)" }
            let pid = try await client.withConnection { connection in
                for i in 1...3 {
                    try await connection.query("INSERT INTO \(unescaped: table) (id, v) VALUES (\(i), \("v\(i)"))")
                }
                #expect(try await connection.query(select(2)).first?.decode(String.self, at: 1) == "v2")
                #expect(try await connection.query(select(3)).first?.decode(String.self, at: 1) == "v3")
                // One INSERT and one SELECT, each prepared once; the server holds the same two.
                #expect(await connection.preparedStatementCount == 2)
                let held = try await connection.query("SELECT statement FROM pg_prepared_statements").rows
                    .map { try $0.decode(String.self, at: 0) }
                #expect(held.count == 2)
                #expect(held.contains(select(1).sql))

                // The table changes shape under the prepared SELECT *: outside a transaction it is prepared again.
                try await admin.query("ALTER TABLE \(unescaped: table) ADD COLUMN extra integer DEFAULT 7")
                let row = try await connection.query(select(1)).first
                #expect(try row?.decode(Int.self, at: 2) == 7)
                // Inside one, the statement fails as the server says (nothing else ran) and is prepared afresh next.
                try await admin.query("ALTER TABLE \(unescaped: table) DROP COLUMN extra")
                await #expect(throws: DatabaseError.self) {
                    try await connection.withTransaction { try await $0.query(select(1)) }
                }
                #expect(try await connection.query(select(1)).first?.columns.names == ["id", "v"])
                return try await connection.query("SELECT pg_backend_pid()").first!.decode(Int.self, at: 0)
            }

            // The session ends under the pool: the next loan reconnects, and the statement is prepared in the new one.
            try await admin.query("SELECT pg_terminate_backend(\(pid))")
            for _ in 0..<100 {
                let alive = try await admin.query("SELECT count(*) FROM pg_stat_activity WHERE pid = \(pid)")
                if try alive.first!.decode(Int.self, at: 0) == 0 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            try await client.withConnection { connection in
                #expect(await connection.preparedStatementCount == 0)
                #expect(try await connection.query(select(3)).first?.decode(String.self, at: 1) == "v3")
                #expect(await connection.preparedStatementCount == 1)
                let newPID = try await connection.query("SELECT pg_backend_pid()").first!.decode(Int.self, at: 0)
                #expect(newPID != pid)
            }
        }
        await admin.close()
        await client.close()
    }

    @Test("SQLSTATE and the constraint name on a unique violation")
    func uniqueViolation() async throws {
        let client = try makeClient()
        try await withTable(client, columns: "k text PRIMARY KEY") { table in
            try await client.query("INSERT INTO \(unescaped: table) VALUES (\("citizen-4417"))")
            await #expect {
                try await client.query("INSERT INTO \(unescaped: table) VALUES (\("citizen-4417"))")
            } throws: { error in
                guard let error = error as? DatabaseError else { return false }
                // The value stays out of the description (it goes to logs); the debug description has the detail.
                return error.code == .server && error.sqlState == "23505" && error.isUniqueViolation
                    && error.constraint == "\(table)_pkey" && !error.description.contains("4417")
                    && error.debugDescription.contains("4417")
            }
            // A syntax error is a server error with its own SQLSTATE, and the connection stays usable.
            await #expect {
                try await client.query("SELEC 1")
            } throws: { ($0 as? DatabaseError)?.sqlState == "42601" }
            #expect(await client.ping())
        }
    }

    @Test("COPY of 100,000 rows")
    func copyRows() async throws {
        let client = try makeClient()
        try await withTable(client, columns: "id bigint PRIMARY KEY, label text, note text") { table in
            let count = 100_000
            let rows = (0..<count).lazy.map { i -> [(any SQLEncodable)?] in
                [i, "riga \(i)\tcon tab\ne a capo \\ 中文", i % 10 == 0 ? nil : "n"]
            }
            let copied = try await client.withConnection {
                try await $0.copy(into: table, columns: ["id", "label", "note"], rows: rows)
            }
            #expect(copied == count)
            let stats = try #require(
                try await client.query(
                    "SELECT count(*), count(note), max(id) FROM \(unescaped: table)"
                ).first
            )
            let (total, notes, maxID) = try stats.decode(Int.self, Int.self, Int.self)
            #expect(total == count && notes == count - count / 10 && maxID == count - 1)
            let sample = try #require(
                try await client.query("SELECT label FROM \(unescaped: table) WHERE id = 77").first)
            #expect(try sample.decode(String.self, at: 0) == "riga 77\tcon tab\ne a capo \\ 中文")
        }
    }

    @Test("COPY of text already in COPY's format; a malformed line is refused with the server's error")
    func copyText() async throws {
        let client = try makeClient(maxConnections: 1)
        try await withTable(client, columns: "id bigint PRIMARY KEY, label text") { table in
            var text: [UInt8] = []
            for i in 1...5_000 { text += Array("\(i)\triga \(i)\\tcon tab\n".utf8) }
            let copied = try await client.withConnection {
                try await $0.copy(into: table, columns: ["id", "label"], text: text)
            }
            #expect(copied == 5_000)
            let row = try #require(try await client.query("SELECT label FROM \(unescaped: table) WHERE id = 42").first)
            #expect(try row.decode(String.self, at: 0) == "riga 42\tcon tab")
            await #expect {
                try await client.withConnection {
                    try await $0.copy(into: table, columns: ["id", "label"], text: Array("x\ty\n".utf8))
                }
            } throws: { ($0 as? DatabaseError)?.sqlState == "22P02" }
            #expect(await client.ping())
            let total = try #require(try await client.query("SELECT count(*) FROM \(unescaped: table)").first)
            #expect(try total.decode(Int.self, at: 0) == 5_000)
        }
    }

    @Test("a failing COPY reports the server's error and leaves the connection usable")
    func copyFailure() async throws {
        let client = try makeClient(maxConnections: 1)
        try await withTable(client, columns: "id bigint PRIMARY KEY") { table in
            let rows: [[(any SQLEncodable)?]] = [[1], [1]]
            await #expect {
                try await client.withConnection { try await $0.copy(into: table, columns: ["id"], rows: rows) }
            } throws: { ($0 as? DatabaseError)?.sqlState == "23505" }
            #expect(await client.ping())
        }
    }

    @Test("1,000,000 rows streamed row by row with memory that does not grow with the row count")
    func streamMillionRows() async throws {
        let client = try makeClient()
        var count = 0
        var sum = 0
        var residentAt100k = 0
        var residentMax = 0
        try await client.withConnection { connection in
            try await connection.withRows(
                "SELECT g, md5(g::text) FROM generate_series(1, \(1_000_000)) AS g"
            ) { rows in
                for try await row in rows {
                    sum += try row.decode(Int.self, at: 0)
                    count += 1
                    if count == 100_000 { residentAt100k = residentBytes() }
                    if count % 100_000 == 0 { residentMax = max(residentMax, residentBytes()) }
                }
            }
        }
        #expect(count == 1_000_000)
        #expect(sum == 500_000_500_000)
        // Materialised, a million such rows would take hundreds of MB; streaming stays within a few MB.
        let growth = residentMax - residentAt100k
        #expect(growth < 32 * 1024 * 1024, "resident memory grew \(growth / 1024) KiB between 100k and 1M rows")
    }

    @Test("leaving a stream early cancels the query and the connection is usable at once")
    func streamStopsEarly() async throws {
        let client = try makeClient(maxConnections: 1)
        let firstTen = try await client.withConnection { connection in
            try await connection.withRows("SELECT g FROM generate_series(1, 10000000) AS g", batchSize: 100) { rows in
                var seen: [Int] = []
                for try await row in rows {
                    seen.append(try row.decode(Int.self, at: 0))
                    if seen.count == 10 { break }
                }
                return seen
            }
        }
        #expect(firstTen == Array(1...10))
        #expect(try await client.query("SELECT 42").first!.decode(Int.self, at: 0) == 42)
    }

    @Test("cancelling the task cancels a running query")
    func cancellation() async throws {
        let client = try makeClient()
        let task = Task { try await client.query("SELECT pg_sleep(30)") }
        // Cancel once the query runs on the server (a cold CI machine may take longer than any fixed sleep to get
        // there, and a task cancelled before its query starts fails with CancellationError instead).
        let running = try await eventually {
            try await client.query(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(30)%'"
            ).first!.decode(Int.self, at: 0) >= 1
        }
        #expect(running)
        let cancelled = ContinuousClock.now
        task.cancel()
        await #expect {
            _ = try await task.value
        } throws: { ($0 as? DatabaseError)?.sqlState == "57014" }
        // Far less than the 30 s the query would sleep (the bound leaves room for a loaded machine).
        #expect(ContinuousClock.now - cancelled < .seconds(15))
        #expect(await client.ping())
    }

    @Test("the pool bounds its connections and every caller gets one in turn")
    func poolBounds() async throws {
        let client = try makeClient(maxConnections: 3)
        let pids = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<12 {
                group.addTask {
                    try await client.query("SELECT pg_backend_pid() FROM pg_sleep(0.05)").first!.decode(Int.self, at: 0)
                }
            }
            var pids = Set<Int>()
            for try await pid in group { pids.insert(pid) }
            return pids
        }
        #expect(pids.count <= 3)
        await client.close()
        await #expect(throws: DatabaseError.self) { try await client.query("SELECT 1") }
    }

    @Test("a ping with a deadline answers false at the deadline while every connection is busy, true once one is free")
    func pingDeadline() async throws {
        let client = try makeClient(maxConnections: 1)
        let (taken, signal) = AsyncStream<Void>.makeStream()
        let busy = Task {
            try await client.withConnection { _ in
                signal.yield()
                try await Task.sleep(for: .seconds(30))
            }
        }
        for await _ in taken { break }  // the only connection is lent out
        let start = ContinuousClock.now
        #expect(await client.ping(within: .milliseconds(500)) == false)
        // Answered at the deadline, not when the connection comes back (30 s): a bound against that wait, generous
        // for a loaded machine, not a measure.
        #expect(ContinuousClock.now - start < .seconds(15))
        busy.cancel()  // the connection comes back
        _ = try? await busy.value
        #expect(await client.ping())
        await client.close()
    }

    @Test("an unreachable server or a missing database fails fast with a clear error")
    func connectFailures() async throws {
        let start = ContinuousClock.now
        await #expect {
            _ = try await DatabaseConnection.connect(
                DatabaseConfiguration(url: "postgres://postgres@127.0.0.1:1/none", connectTimeout: 2), logger: logger
            )
        } throws: { ($0 as? DatabaseError)?.code == .connectionFailed }
        let url = try TestServers.databaseURL()
        let missing = url[..<url.lastIndex(of: "/")!] + "/no_such_database"
        await #expect {
            _ = try await DatabaseConnection.connect(DatabaseConfiguration(url: String(missing)), logger: logger)
        } throws: { error in
            guard let error = error as? DatabaseError else { return false }
            return error.code == .connectionFailed && String(reflecting: error).contains("no_such_database")
        }
        // Both end in an error rather than waiting on (a refused port is not retried until some timeout, a missing
        // database is not retried at all): a generous bound, against a hang, not a measurement.
        #expect(ContinuousClock.now - start < .seconds(20))
        #expect(throws: DatabaseError.self) { try DatabaseConfiguration(url: "mysql://x") }
    }

    @Test("migrations apply, and applying them again changes nothing")
    func migrationsTwice() async throws {
        let client = try makeClient()
        let migrator = try Migrator(logger: logger)
        #expect(!migrator.migrations.isEmpty)
        try await migrator.migrate(client)
        let first = try await migrator.applied(client)
        let again = try await migrator.migrate(client)
        #expect(again.isEmpty)
        #expect(try await migrator.applied(client) == first)
        #expect(Set(first.keys) == Set(migrator.migrations.map(\.version)))
        let topics = try await client.query("SELECT slug FROM topics ORDER BY slug").rows.map {
            try $0.decode(String.self, at: 0)
        }
        #expect(topics == ["disservizi", "eventi", "farmacie", "protezione-civile", "scadenze", "scuola"])
        for table in [
            "subscribers", "subscriber_topics", "inbound_messages", "bulletins", "deliveries", "rate_limits", "outbox",
        ] {
            let exists = try await client.query("SELECT to_regclass(\(table)) IS NOT NULL").first!.decode(
                Bool.self, at: 0)
            #expect(exists, "table \(table)")
        }
        // Two runners at once serialise on the advisory lock.
        async let a = migrator.migrate(client)
        async let b = migrator.migrate(client)
        let (appliedA, appliedB) = try await (a, b)
        #expect(appliedA.isEmpty && appliedB.isEmpty)
    }

    @Test("a migration changed after it was applied is refused")
    func changedMigration() async throws {
        let client = try makeClient()
        let migrator = try Migrator(logger: logger)
        try await migrator.migrate(client)
        let first = try #require(migrator.migrations.first)
        let tampered = try Migrator(
            migrations: [Migrator.Migration(version: first.version, name: first.name, sql: first.sql + "\n-- edited")],
            logger: logger
        )
        await #expect(throws: Migrator.Failure.self) { try await tampered.migrate(client) }
    }
}
