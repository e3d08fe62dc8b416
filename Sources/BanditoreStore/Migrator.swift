import BanditorePostgres
import Foundation
import Logging

/// Applies the versioned SQL files in `Migrations/` (`NNNN_name.sql`) in order, each in its own transaction,
/// under an advisory lock so that services starting together do not race. Applied versions are recorded with a
/// checksum; a file changed after it was applied is an error, never silently re-run.
public struct Migrator: Sendable {
    public struct Migration: Sendable, Hashable {
        public let version: Int
        public let name: String
        public let sql: String
        public var checksum: String { Self.fnv1a(sql) }

        public init(version: Int, name: String, sql: String) {
            self.version = version
            self.name = name
            self.sql = sql
        }

        static func fnv1a(_ text: String) -> String {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in text.utf8 {
                hash ^= UInt64(byte)
                hash = hash &* 0x100_0000_01b3
            }
            return String(hash, radix: 16)
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public let migrations: [Migration]
    private let logger: Logger

    /// The migrations shipped with Banditore.
    public init(logger: Logger) throws {
        try self.init(migrations: Self.bundled(), logger: logger)
    }

    public init(migrations: [Migration], logger: Logger) throws {
        let versions = migrations.map(\.version)
        guard Set(versions).count == versions.count else { throw Failure(description: "duplicate migration version") }
        self.migrations = migrations.sorted { $0.version < $1.version }
        self.logger = logger
    }

    /// Reads `NNNN_name.sql` files from the module's resources.
    public static func bundled() throws -> [Migration] {
        guard let folder = Bundle.module.url(forResource: "Migrations", withExtension: nil) else {
            throw Failure(description: "migrations folder missing from the bundle")
        }
        return try load(from: folder)
    }

    public static func load(from folder: URL) throws -> [Migration] {
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".sql") }
        return try files.map { file in
            let stem = file.dropLast(4)
            guard let underscore = stem.firstIndex(of: "_"), let version = Int(stem[..<underscore]) else {
                throw Failure(description: "migration file \(file) is not named NNNN_name.sql")
            }
            let sql = try String(contentsOf: folder.appending(path: file), encoding: .utf8)
            return Migration(version: version, name: String(stem[stem.index(after: underscore)...]), sql: sql)
        }
    }

    /// Applies what is missing and returns the versions it applied.
    @discardableResult
    public func migrate(_ client: DatabasePool) async throws -> [Int] {
        try await client.withConnection { connection in
            // The lock comes first: concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog.
            try await connection.query("SELECT pg_advisory_lock(\(Self.lockKey))")
            do {
                try await connection.query(
                    """
                    CREATE TABLE IF NOT EXISTS schema_migrations (
                        version integer PRIMARY KEY,
                        name text NOT NULL,
                        checksum text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now()
                    )
                    """
                )
                let applied = try await apply(on: connection)
                try await connection.query("SELECT pg_advisory_unlock(\(Self.lockKey))")
                return applied
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.lockKey))")
                throw error
            }
        }
    }

    /// The versions recorded as applied, with their checksums.
    public func applied(_ client: DatabasePool) async throws -> [Int: String] {
        let rows = try await client.query("SELECT version, checksum FROM schema_migrations").rows
        var result: [Int: String] = [:]
        for row in rows {
            let (version, checksum) = try row.decode(Int.self, String.self)
            result[version] = checksum
        }
        return result
    }

    private static let lockKey: Int64 = 0x6261_6e64_6974  // "bandit"

    private func apply(on connection: DatabaseConnection) async throws -> [Int] {
        var done: [Int: String] = [:]
        for row in try await connection.query("SELECT version, checksum FROM schema_migrations").rows {
            let (version, checksum) = try row.decode(Int.self, String.self)
            done[version] = checksum
        }
        var newlyApplied: [Int] = []
        for migration in migrations {
            if let checksum = done[migration.version] {
                guard checksum == migration.checksum else {
                    throw Failure(
                        description: "migration \(migration.version)_\(migration.name) changed after it was applied"
                    )
                }
                continue
            }
            logger.info("applying migration", metadata: ["migration": "\(migration.version)_\(migration.name)"])
            try await connection.withTransaction { connection in
                try await connection.execute(script: migration.sql)
                try await connection.query(
                    """
                    INSERT INTO schema_migrations (version, name, checksum)
                    VALUES (\(migration.version), \(migration.name), \(migration.checksum))
                    """
                )
            }
            newlyApplied.append(migration.version)
        }
        return newlyApplied
    }
}
