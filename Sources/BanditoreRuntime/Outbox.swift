import BanditoreAMQP
import BanditoreCore
import BanditorePostgres
import Foundation
import Logging
import ServiceLifecycle

/// Messages that must be published because a transaction committed (the `outbox` table).
///
/// A service writes its messages with ``add(encoding:type:messageID:exchange:routingKey:on:)`` inside the
/// transaction of its effect; after the commit it publishes them with ``OutboxRelay/publishCommitted(_:)``, and a
/// sweep publishes whatever a crash or a broker outage left behind (rows older than a few seconds, locked with
/// `FOR UPDATE SKIP LOCKED`, as the publish after a commit locks its rows, so that no two of them ever publish
/// one row both). A row is marked
/// published once the broker confirmed; a crash between the confirm and the mark publishes it again (at least once).
/// Published rows are kept for `retention` (a week by default: what was sent, and when, for an operator looking
/// into a complaint) and then deleted by the relay, a few thousand at a time.
public enum Outbox {
    /// A message to add: its body, encoded, and where it goes.
    public struct Entry: Sendable {
        public let body: [UInt8]
        public let type: String
        public let messageID: String
        public let exchange: String
        public let routingKey: String

        public init(
            encoding value: some Encodable, type: String, messageID: String, exchange: String, routingKey: String
        ) throws {
            body = try MessageBody.encode(value)
            self.type = type
            self.messageID = messageID
            self.exchange = exchange
            self.routingKey = routingKey
        }
    }

    /// Adds `value` as a message; returns it ready to publish once the transaction has committed.
    public static func add(
        encoding value: some Encodable, type: String, messageID: String, exchange: String, routingKey: String,
        on connection: DatabaseConnection
    ) async throws -> OutboxMessage {
        let entry = try Entry(
            encoding: value, type: type, messageID: messageID, exchange: exchange, routingKey: routingKey)
        return try await add([entry], on: connection)[0]
    }

    /// Adds messages in one statement; returns them in the order given, ready to publish once the transaction has
    /// committed. A message id already in the outbox (or twice in `entries`) keeps its first row.
    public static func add(_ entries: [Entry], on connection: DatabaseConnection) async throws -> [OutboxMessage] {
        guard !entries.isEmpty else { return [] }
        var seen = Set<String>()
        let unique = entries.filter { seen.insert($0.messageID).inserted }
        let result = try await connection.query(
            """
            INSERT INTO outbox (exchange, routing_key, message_id, message_type, body)
            SELECT * FROM unnest(\(unique.map(\.exchange))::text[], \(unique.map(\.routingKey))::text[],
                                 \(unique.map(\.messageID))::text[], \(unique.map(\.type))::text[],
                                 \(unique.map { SQLBytes($0.body) })::bytea[])
            ON CONFLICT (message_id) DO UPDATE SET message_id = EXCLUDED.message_id
            RETURNING id, message_id
            """
        )
        var ids: [String: Int64] = [:]
        for row in result.rows {
            let (id, messageID) = try row.decode(Int64.self, String.self)
            ids[messageID] = id
        }
        return try entries.map { entry in
            guard let id = ids[entry.messageID] else {
                throw DatabaseError(.decoding, message: "the outbox returned no row for message \(entry.messageID)")
            }
            return OutboxMessage(
                id: id, exchange: entry.exchange, routingKey: entry.routingKey,
                message: .json(entry.body, type: entry.type, messageID: entry.messageID)
            )
        }
    }
}

/// An outbox row: the message and where it goes.
public struct OutboxMessage: Sendable {
    public let id: Int64
    public let exchange: String
    public let routingKey: String
    public let message: AMQPMessage
}

/// Publishes outbox rows: at once after a commit, and in a sweep of rows older than `sweepAge`.
public final class OutboxRelay: Service, Sendable {
    private let amqp: AMQPConnection
    private let database: DatabasePool
    private let logger: Logger
    private let sweepInterval: Duration
    private let sweepAge: Duration
    private let retention: Duration
    private let pruneInterval: Duration

    public init(
        amqp: AMQPConnection, database: DatabasePool, logger: Logger, sweepInterval: Duration = .seconds(2),
        sweepAge: Duration = .seconds(5), retention: Duration = .seconds(7 * 24 * 3600),
        pruneInterval: Duration = .seconds(600)
    ) {
        self.amqp = amqp
        self.database = database
        self.logger = logger
        self.sweepInterval = sweepInterval
        self.sweepAge = sweepAge
        self.retention = retention
        self.pruneInterval = pruneInterval
    }

    /// Publishes a message the caller has just committed to the outbox, without reading it back, and marks it.
    public func publishCommitted(_ row: OutboxMessage) async throws {
        try await publishCommitted(chains: [[row]])
    }

    /// Publishes messages the caller has just committed and marks them in one statement. Each chain is published
    /// in its order (a message once the one before it is confirmed), the chains all at once; a chain stops at a
    /// message the broker did not take, the ones confirmed are marked all the same, and the error is thrown.
    ///
    /// The rows are locked meanwhile (`FOR UPDATE SKIP LOCKED`, as the sweep locks them), so that the sweep never
    /// publishes a row this is publishing, however long a loaded machine takes: a row the sweep holds, or has
    /// published already, is left to it.
    public func publishCommitted(chains: [[OutboxMessage]]) async throws {
        let ids = chains.flatMap { $0.map(\.id) }
        guard !ids.isEmpty else { return }
        let amqp = self.amqp
        let failure: (any Error)? = try await database.withTransaction { connection in
            let claimed = Set(
                try await connection.query(
                    "SELECT id FROM outbox WHERE id = ANY(\(ids)) AND published_at IS NULL FOR UPDATE SKIP LOCKED"
                ).rows.map { try $0.decode(Int64.self, at: 0) }
            )
            var confirmed: [Int64] = []
            var failure: (any Error)?
            await withTaskGroup(of: ([Int64], (any Error)?).self) { group in
                for chain in chains {
                    let mine = chain.filter { claimed.contains($0.id) }
                    guard !mine.isEmpty else { continue }
                    group.addTask {
                        var done: [Int64] = []
                        for row in mine {
                            do {
                                try await amqp.publishConfirmed(
                                    row.message, exchange: row.exchange, routingKey: row.routingKey
                                )
                                done.append(row.id)
                            } catch {
                                return (done, error)
                            }
                        }
                        return (done, nil)
                    }
                }
                for await (done, error) in group {
                    confirmed += done
                    if let error { failure = failure ?? error }
                }
            }
            if !confirmed.isEmpty {
                try await connection.query("UPDATE outbox SET published_at = now() WHERE id = ANY(\(confirmed))")
            }
            return failure
        }
        // The marks of what was confirmed are committed; what was not stays for the sweep.
        if let failure { throw failure }
    }

    /// Publishes up to 500 rows left unpublished for longer than `sweepAge`; returns how many.
    @discardableResult
    public func sweep() async throws -> Int {
        let age = sweepAge.inSeconds
        return try await publishRows(
            "SELECT id, exchange, routing_key, message_id, message_type, body FROM outbox WHERE published_at IS NULL AND created_at < now() - make_interval(secs => \(age)) ORDER BY id LIMIT 500 FOR UPDATE SKIP LOCKED"
        )
    }

    @discardableResult
    private func publishRows(_ select: SQLQuery) async throws -> Int {
        try await database.withTransaction { connection in
            let rows = try await connection.query(select).rows
            guard !rows.isEmpty else { return 0 }
            var published: [Int64] = []
            try await withThrowingTaskGroup(of: Int64.self) { group in
                for row in rows {
                    let (id, exchange, routingKey, messageID, type, body) = try row.decode(
                        Int64.self, String.self, String.self, String.self, String.self, SQLBytes.self
                    )
                    let amqp = self.amqp
                    group.addTask {
                        try await amqp.publishConfirmed(
                            .json(body.bytes, type: type, messageID: messageID), exchange: exchange,
                            routingKey: routingKey
                        )
                        return id
                    }
                }
                for try await id in group { published.append(id) }
            }
            try await connection.query("UPDATE outbox SET published_at = now() WHERE id = ANY(\(published))")
            return published.count
        }
    }

    /// Deletes the rows published longer than `retention` ago, in statements of at most `batch` rows (oldest
    /// first, by id: each a short transaction, never a long lock); returns how many. Rows not yet published are
    /// never deleted, however old.
    @discardableResult
    public func prune(batch: Int = 5_000) async throws -> Int {
        let seconds = retention.inSeconds
        return try await deleteInBatches(of: batch) { batch in
            try await database.query(
                """
                DELETE FROM outbox WHERE id IN (
                    SELECT id FROM outbox WHERE published_at < now() - make_interval(secs => \(seconds))
                     ORDER BY id LIMIT \(batch) FOR UPDATE SKIP LOCKED)
                """
            ).affectedRows
        }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var pruned = ContinuousClock.now
            while !Task.isCancelled {
                do {
                    let count = try await self.sweep()
                    if count > 0 {
                        self.logger.info("outbox: published rows left behind", metadata: ["rows": "\(count)"])
                    }
                } catch {
                    self.logger.warning("outbox sweep failed", metadata: ["error": "\(String(reflecting: error))"])
                }
                if ContinuousClock.now - pruned >= self.pruneInterval {
                    pruned = ContinuousClock.now
                    do {
                        let count = try await self.prune()
                        if count > 0 {
                            self.logger.info("outbox: deleted rows past retention", metadata: ["rows": "\(count)"])
                        }
                    } catch {
                        self.logger.warning("outbox prune failed", metadata: ["error": "\(String(reflecting: error))"])
                    }
                }
                try? await Task.sleep(for: self.sweepInterval)
            }
        }
    }
}
