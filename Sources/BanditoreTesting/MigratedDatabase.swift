import BanditorePostgres
import BanditoreStore
import Logging

extension IsolatedServers {
    /// A client of the test's own database, with every migration applied.
    public func migratedDatabase(logger: Logger) async throws -> DatabasePool {
        let client = try DatabasePool(url: databaseURL, logger: logger)
        _ = try await Migrator(logger: logger).migrate(client)
        return client
    }
}
