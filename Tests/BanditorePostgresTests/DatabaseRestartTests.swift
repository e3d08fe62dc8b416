import BanditorePostgres
import BanditoreTesting
import Foundation
import Logging
import Testing

/// Restarts a PostgreSQL of its own (see ``PrivateServer``), so that the other tests are not disturbed.
@Suite("PostgreSQL across a server restart", .serialized)
struct DatabaseRestartTests {
    @Test("the pool reconnects after the server restarts; a query cut off by the restart fails clearly")
    func poolSurvivesRestart() async throws {
        try await PrivateServer.with(.postgres, portBase: 5791) { try await check($0) }
    }

    private func check(_ server: PrivateServer) async throws {
        let client = try DatabasePool(
            configuration: DatabaseConfiguration(url: server.url, maxConnections: 2),
            logger: Logger(label: "test.postgres.restart")
        )
        try await client.query("CREATE TABLE IF NOT EXISTS survivors (v integer)")
        try await client.query("INSERT INTO survivors VALUES (1)")

        // A long query when the server goes down ends with an error that says the connection was lost.
        let longQuery = Task { try await client.query("SELECT pg_sleep(30)") }
        try await Task.sleep(for: .milliseconds(300))
        try await server.stop()
        await #expect {
            _ = try await longQuery.value
        } throws: { error in
            guard let error = error as? DatabaseError else { return false }
            return error.code == .connectionClosed || error.sqlState == "57P01"
        }
        await #expect(throws: DatabaseError.self) { try await client.query("SELECT 1") }

        try await server.start()
        // Idle connections from before the restart are noticed and replaced: the next query just works.
        let count = try await client.query("SELECT count(*) FROM survivors").first!.decode(Int.self, at: 0)
        #expect(count == 1)
        try await client.query("INSERT INTO survivors VALUES (2)")

        // Connections idle through a restart hold the server's farewell and then its end of file: the first use
        // after the restart finds them dead and reconnects, so that not one query (nor a readiness ping) fails.
        async let first = client.query("SELECT pg_sleep(0.2)")
        async let second = client.query("SELECT pg_sleep(0.2)")
        _ = try await (first, second)
        try await server.stop()
        try await server.start()
        #expect(await client.ping())
        #expect(await client.ping())
        async let third = client.query("SELECT count(*) FROM survivors")
        async let fourth = client.query("SELECT count(*) FROM survivors")
        #expect(try await [third, fourth].map { try $0.first!.decode(Int.self, at: 0) } == [2, 2])
        await client.close()
    }
}
