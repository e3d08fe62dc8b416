import BanditoreAMQP
import BanditoreChannels
import BanditoreCore
import BanditorePostgres
import BanditoreRuntime
import BanditoreStore
import Foundation
import Logging

/// The audience's deliveries, written with COPY a block at a time while the block before is published.
extension Composer {
    /// Streams the rest of the audience (active subscribers of the bulletin's channels following one of its topics,
    /// everyone active when urgent) from `audience_cursor` on and writes its deliveries with COPY, a block of
    /// `checkpoint` at a time, each block in a transaction that moves the cursor. Two blocks are written at once on
    /// two connections (PostgreSQL's COPY is the critical path, and one backend uses one core), their ids reserved
    /// and their transactions committed in block order, so that the cursor never passes a block not committed; while
    /// they are written, the block before them is published (the one before it confirmed). Returns false when the
    /// bulletin stopped being `sending` (cancelled).
    func writeAudience(_ bulletin: StoredBulletin, jobs: JobBatcher, logger: Logger) async throws -> Bool {
        let content = bulletin.content
        let blockSize = configuration.checkpoint
        let started = ContinuousClock.now
        var written = 0
        // Time spent waiting for PostgreSQL to finish writing a block: near the whole run, the writing is the
        // critical path; near zero, the streaming and publishing are.
        var waitedForWrites = Duration.zero
        var writingTook = Duration.zero
        return try await database.withConnection { reader in
            try await database.withConnection { first in
                try await database.withConnection { second in
                    let writers = [first, second]
                    var blocks = 0
                    var block: [AudienceRow] = []
                    block.reserveCapacity(blockSize)
                    var inFlight: [BlockWrite] = []

                    /// Waits for the oldest block being written and publishes it; false when the bulletin stopped.
                    func publishOldest() async throws -> Bool {
                        let oldest = inFlight.removeFirst()
                        let waitStarted = ContinuousClock.now
                        let outcome = try await oldest.committed.value
                        waitedForWrites += ContinuousClock.now - waitStarted
                        writingTook += outcome.took
                        guard let firstID = outcome.first else { return false }
                        written += oldest.rows.count
                        // The blocks published before this one, confirmed by now as a rule: waiting for them here
                        // rather than after publishing this one keeps the broker's fsync off the critical path.
                        try await jobs.confirm(persist: false)
                        for (offset, row) in oldest.rows.enumerated() {
                            try await jobs.add(
                                Recipient(
                                    deliveryID: firstID + Int64(offset), subscriberID: row.subscriberID,
                                    address: row.address, language: row.language
                                ),
                                channel: row.channel
                            )
                        }
                        try await jobs.flush()
                        return true
                    }

                    /// Starts writing `rows` on the connection the block before last used (finished by now).
                    func start(_ rows: [AudienceRow]) {
                        let connection = writers[blocks % writers.count]
                        blocks += 1
                        let previous = inFlight.last
                        let confirmed = jobs.confirmedCursor
                        let bulletinID = bulletin.id
                        let reserved = Task {
                            // Ids in block order: a bulletin's deliveries are the range between its first and last.
                            _ = try await previous?.reserved.value
                            return try await Self.reserve(rows.count, on: connection)
                        }
                        let committed = Task {
                            let writeStarted = ContinuousClock.now
                            let firstID = try await Self.write(
                                rows, of: bulletinID, first: try await reserved.value, confirmed: confirmed,
                                after: previous?.committed, on: connection
                            )
                            return BlockWrite.Outcome(first: firstID, took: ContinuousClock.now - writeStarted)
                        }
                        inFlight.append(BlockWrite(rows: rows, reserved: reserved, committed: committed))
                    }

                    func advance(_ next: [AudienceRow]?) async throws -> Bool {
                        guard let next else {
                            while !inFlight.isEmpty { guard try await publishOldest() else { return false } }
                            return true
                        }
                        if inFlight.count >= writers.count { guard try await publishOldest() else { return false } }
                        start(next)
                        return true
                    }

                    var finished = false
                    do {
                        try await reader.withRows(
                            """
                            SELECT id, channel, address, language
                              FROM bulletin_audience(\(content.channels.map(\.rawValue))::text[], \(content.topics)::text[],
                                                     \(content.urgency == .urgent), \(bulletin.audienceCursor))
                            """
                        ) { rows in
                            for try await row in rows {
                                let (subscriberID, channelName, address, languageCode) = try row.decode(
                                    Int64.self, String.self, String.self, String.self
                                )
                                guard let channel = Channel(rawValue: channelName) else { continue }
                                block.append(
                                    AudienceRow(
                                        subscriberID: subscriberID, channel: channel, address: address,
                                        language: Language(rawValue: languageCode) ?? .italian
                                    )
                                )
                                if block.count >= blockSize {
                                    guard try await advance(block) else { throw FanOutStopped() }
                                    block.removeAll(keepingCapacity: true)
                                }
                            }
                        }
                        if !block.isEmpty { guard try await advance(block) else { throw FanOutStopped() } }
                        finished = try await advance(nil)
                    } catch is FanOutStopped {
                        finished = false
                    } catch {
                        // The connections go back to the pool only once no write uses them.
                        for write in inFlight { _ = try? await write.committed.value }
                        throw error
                    }
                    for write in inFlight { _ = try? await write.committed.value }
                    guard finished else { return false }
                    let elapsed = ContinuousClock.now - started
                    logger.info(
                        "audience written",
                        metadata: [
                            "deliveries": "\(written)", "elapsed": "\(elapsed)", "writing": "\(writingTook)",
                            "waited_for_writes": "\(waitedForWrites)",
                        ]
                    )
                    return true
                }
            }
        }
    }

    /// Reserves `count` consecutive delivery ids; returns the first.
    private static func reserve(_ count: Int, on connection: DatabaseConnection) async throws -> Int64 {
        try await connection.query("SELECT reserve_delivery_ids(\(Int64(count)))").rows[0].decode(Int64.self, at: 0)
    }

    /// Writes a block of the audience's deliveries under the ids reserved for it and, once the block before it has
    /// committed, moves the bulletin's cursors, in one transaction; returns the block's first delivery id, or nil
    /// (having written nothing) when the bulletin is no longer `sending` or the block before it stopped.
    private static func write(
        _ rows: [AudienceRow], of bulletin: UUID, first: Int64, confirmed: Int64,
        after previous: Task<BlockWrite.Outcome, any Error>?, on connection: DatabaseConnection
    ) async throws -> Int64? {
        let last = first + Int64(rows.count) - 1
        do {
            return try await connection.withTransaction { connection in
                // Written as COPY text here: formatting the bulletin's id for each of a million rows was the
                // composer's largest cost. Nothing in these values needs escaping.
                let bulletinText = Array(bulletin.uuidString.lowercased().utf8)
                var text: [UInt8] = []
                text.reserveCapacity(rows.count * (bulletinText.count + 40))
                for (offset, row) in rows.enumerated() {
                    text.append(contentsOf: String(first + Int64(offset)).utf8)
                    text.append(9)
                    text.append(contentsOf: bulletinText)
                    text.append(9)
                    text.append(contentsOf: String(row.subscriberID).utf8)
                    text.append(9)
                    text.append(contentsOf: row.channel.rawValue.utf8)
                    text.append(10)
                }
                try await connection.copy(
                    into: "deliveries", columns: ["id", "bulletin_id", "subscriber_id", "channel"], text: text
                )
                // Commits in block order: the cursor must never pass a block that a crash could still undo.
                if let previous, try await previous.value.first == nil { throw FanOutStopped() }
                // A cancel holds this row while it cancels the deliveries written so far and records the rest of
                // the audience: waiting for it here, this block finds the bulletin cancelled and rolls back.
                let moved = try await connection.query(
                    """
                    UPDATE bulletins SET audience_cursor = \(rows[rows.count - 1].subscriberID),
                                         first_delivery_id = coalesce(first_delivery_id, \(first)),
                                         last_delivery_id = \(last), fanout_cursor = greatest(fanout_cursor, \(confirmed)),
                                         updated_at = now()
                     WHERE id = \(bulletin) AND state = 'sending'
                    """
                ).affectedRows
                guard moved == 1 else { throw FanOutStopped() }
                return first
            }
        } catch is FanOutStopped {
            return nil
        }
    }
}

/// A block of the audience being written: its rows, its reserved ids, its transaction.
struct BlockWrite: Sendable {
    struct Outcome: Sendable {
        var first: Int64?
        var took: Duration
    }

    let rows: [AudienceRow]
    let reserved: Task<Int64, any Error>
    let committed: Task<Outcome, any Error>
}

/// The bulletin stopped being `sending` (cancelled) while its audience was written.
struct FanOutStopped: Error {}

/// One subscriber of a bulletin's audience, as streamed.
struct AudienceRow: Sendable {
    var subscriberID: Int64
    var channel: Channel
    var address: String
    var language: Language
}
