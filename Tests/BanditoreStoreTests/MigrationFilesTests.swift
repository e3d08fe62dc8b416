import Foundation
import Logging
import Testing

@testable import BanditoreStore

/// The migrations as shipped, read without a database: what `Migrator` applies and refuses.
@Suite("Migration files")
struct MigrationFilesTests {
    @Test("the bundled migrations are numbered 1, 2, 3… without a gap, named, and each creates or alters something")
    func bundled() throws {
        let migrations = try Migrator(logger: Logger(label: "test.store")).migrations
        #expect(migrations.map(\.version) == Array(1...migrations.count))
        #expect(migrations.count >= 8)
        for migration in migrations {
            #expect(!migration.name.isEmpty)
            let sql = migration.sql.uppercased()
            #expect(sql.contains("CREATE") || sql.contains("ALTER"), "\(migration.version)_\(migration.name)")
        }
        #expect(migrations.last { $0.name == "recipient_pace" }?.sql.contains("recipient_pace") == true)
    }

    @Test("a checksum follows the text: the same text the same checksum, one changed character another")
    func checksums() {
        let one = Migrator.Migration(version: 1, name: "a", sql: "CREATE TABLE t (x int);")
        let same = Migrator.Migration(version: 1, name: "a", sql: "CREATE TABLE t (x int);")
        let changed = Migrator.Migration(version: 1, name: "a", sql: "CREATE TABLE t (y int);")
        #expect(one.checksum == same.checksum)
        #expect(one.checksum != changed.checksum)
        #expect(!one.checksum.isEmpty && one.checksum.allSatisfy(\.isHexDigit))
    }

    @Test(
        "a folder of migrations: NNNN_name.sql read in version order; two of one version, or a badly named file, refused"
    )
    func folder() throws {
        let folder = FileManager.default.temporaryDirectory.appending(path: "banditore-migrations-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try "CREATE TABLE b (x int);".write(to: folder.appending(path: "0002_b.sql"), atomically: true, encoding: .utf8)
        try "CREATE TABLE a (x int);".write(to: folder.appending(path: "0001_a.sql"), atomically: true, encoding: .utf8)
        try "not a migration".write(to: folder.appending(path: "README.txt"), atomically: true, encoding: .utf8)
        let migrator = try Migrator(migrations: try Migrator.load(from: folder), logger: Logger(label: "test.store"))
        #expect(migrator.migrations.map(\.version) == [1, 2])
        #expect(migrator.migrations.map(\.name) == ["a", "b"])
        #expect(throws: Migrator.Failure.self) {
            try Migrator(
                migrations: [.init(version: 1, name: "a", sql: ""), .init(version: 1, name: "b", sql: "")],
                logger: Logger(label: "test.store")
            )
        }
        try "".write(to: folder.appending(path: "third.sql"), atomically: true, encoding: .utf8)
        #expect(throws: Migrator.Failure.self) { try Migrator.load(from: folder) }
    }
}
