import BanditoreAMQP
import BanditoreChannels
import BanditoreCore
import BanditorePostgres
import BanditoreRuntime
import BanditoreStore
import Foundation
import Logging
import Metrics
import ServiceLifecycle

/// Turns accepted bulletins into delivery jobs.
///
/// A `bulletin.submitted` message is scheduled (a normal bulletin outside the service windows, or one with a later
/// `send_at`, gets `scheduled_for` and waits) or fanned out at once (urgent bulletins at any hour). A loop fans out
/// scheduled bulletins whose time has come and resumes fan-outs a crash interrupted.
///
/// A fan-out, under a PostgreSQL advisory lock on the bulletin (one composer replica at a time), streams the
/// audience from `subscribers` once, in id order (active subscribers of the bulletin's channels who follow one of its
/// topics; everyone active for an urgent bulletin), so the composer never holds it:
/// 1. every `checkpoint` subscribers become `deliveries` rows, written with COPY under ids reserved for the block, in
///    a transaction that moves `audience_cursor` past them (and stops if the bulletin was cancelled); two blocks are
///    written at once on two connections, committed in order;
/// 2. while PostgreSQL writes a block, the previous one is published as jobs of `chunk` recipients per channel, the
///    message rendered per language, and confirmed by the broker; `fanout_cursor` follows what is confirmed.
/// After a crash the fan-out publishes again the deliveries written past `fanout_cursor` (only the last blocks'
/// jobs can go twice, and dispatchers skip deliveries already sent) and goes on after `audience_cursor`.
public final class Composer: Service, Sendable {
    public struct Configuration: Sendable {
        public var hours: ServiceHours
        public var templates: BulletinTemplates
        public var chunk: Int
        public var checkpoint: Int
        public var pollInterval: Duration
        /// Telegram public channels that get each bulletin once per language (``ChannelPost``).
        public var channelPosts: [ChannelPost]

        public init(
            hours: ServiceHours = .default, templates: BulletinTemplates = .init(), chunk: Int = 500,
            checkpoint: Int = 10_000, pollInterval: Duration = .seconds(1), channelPosts: [ChannelPost] = []
        ) {
            self.hours = hours
            self.templates = templates
            self.chunk = max(1, chunk)
            self.checkpoint = max(self.chunk, checkpoint)
            self.pollInterval = pollInterval
            self.channelPosts = channelPosts
        }
    }

    private let configuration: Configuration
    private let amqp: AMQPConnection
    private let database: PostgresClient
    private let logger: Logger
    private let poison = Counter(label: "banditore_composer_poison_total")
    private let failures = Counter(label: "banditore_composer_failures_total")
    private let scheduled = Counter(label: "banditore_composer_scheduled_total")
    private let fannedOut = Counter(label: "banditore_composer_fanouts_total")
    private let jobsPublished = Counter(label: "banditore_composer_jobs_total")
    private let deliveriesQueued = Counter(label: "banditore_composer_deliveries_total")

    public init(configuration: Configuration, amqp: AMQPConnection, database: PostgresClient, logger: Logger) {
        self.configuration = configuration
        self.amqp = amqp
        self.database = database
        self.logger = logger
    }

    public func run() async throws {
        let consumer = try await amqp.consume(queue: BanditoreTopology.composerBulletins, prefetch: 4)
        logger.info("composer consuming", metadata: ["queue": "\(BanditoreTopology.composerBulletins)"])
        await withTaskGroup { group in
            group.addTask { await self.scheduler() }
            group.addTask {
                try? await gracefulShutdown()
                consumer.cancel()
            }
            do {
                for try await delivery in consumer { await self.handle(delivery) }
            } catch {
                logger.error("bulletin consumer ended", metadata: ["error": "\(String(reflecting: error))"])
            }
            group.cancelAll()
        }
        logger.info("composer stopped")
    }

    private func handle(_ delivery: AMQPDelivery) async {
        let settlement = Settlement(what: "bulletin", logger: logger, poison: poison, failures: failures)
        guard let submitted = settlement.decode(BulletinSubmitted.self, from: delivery) else { return }
        var logger = self.logger
        logger[metadataKey: "bulletin.id"] = "\(submitted.bulletinID)"
        logger[metadataKey: "correlation.id"] = "\(submitted.correlationID)"
        await settlement.acknowledge(delivery, logger: logger) {
            try await self.accept(submitted.bulletinID, now: Date(), logger: logger)
        }
    }

    /// Schedules the bulletin, or fans it out when its time has come.
    func accept(_ id: UUID, now: Date, logger: Logger) async throws {
        let due = try await database.withTransaction { connection -> Bool in
            guard let bulletin = try await Bulletins.load(id, on: connection, forUpdate: true) else {
                logger.warning("submitted bulletin not found")
                return false
            }
            guard bulletin.state == "submitted" else { return bulletin.state == "sending" }
            let at = self.sendingTime(bulletin.content, now: now)
            if at > now {
                try await connection.query(
                    "UPDATE bulletins SET state = 'scheduled', scheduled_for = \(at), updated_at = now() WHERE id = \(id)"
                )
                self.scheduled.increment()
                logger.info("bulletin scheduled", metadata: ["scheduled_for": "\(at)"])
                return false
            }
            try await connection.query(
                "UPDATE bulletins SET state = 'sending', scheduled_for = \(now), updated_at = now() WHERE id = \(id)"
            )
            return true
        }
        if due { try await fanOut(id, logger: logger) }
    }

    /// When a bulletin may go: urgent ones at once (or at `send_at`), normal ones at the first service window from
    /// then on.
    func sendingTime(_ content: BulletinContent, now: Date) -> Date {
        let earliest = max(now, content.sendAt ?? now)
        return content.urgency == .urgent ? earliest : configuration.hours.nextOpening(from: earliest)
    }

    /// Every `pollInterval`: fans out scheduled bulletins whose time has come and fan-outs left unfinished.
    private func scheduler() async {
        while !Task.isCancelled {
            do {
                let due = try await database.query(
                    """
                    SELECT id, coalesce(correlation_id, id::text) FROM bulletins
                     WHERE state IN ('scheduled', 'sending') AND scheduled_for <= now()
                     ORDER BY scheduled_for LIMIT 20
                    """
                ).rows.map { try $0.decode(UUID.self, String.self) }
                for (id, correlation) in due {
                    var logger = self.logger
                    logger[metadataKey: "bulletin.id"] = "\(id)"
                    logger[metadataKey: "correlation.id"] = "\(correlation)"
                    try await database.query(
                        "UPDATE bulletins SET state = 'sending', updated_at = now() WHERE id = \(id) AND state = 'scheduled'"
                    )
                    try await fanOut(id, logger: logger)
                }
            } catch {
                failures.increment()
                logger.warning("scheduler pass failed", metadata: ["error": "\(String(reflecting: error))"])
            }
            try? await Task.sleep(for: configuration.pollInterval)
        }
    }

    /// Creates the audience's deliveries and publishes their jobs from the cursor on; returns quietly when another
    /// replica holds the bulletin.
    func fanOut(_ id: UUID, logger: Logger) async throws {
        try await database.withConnection { lock in
            let key = "fanout:\(id.uuidString)"
            let locked = try await lock.query("SELECT pg_try_advisory_lock(hashtext(\(key)))").rows[0]
                .decode(Bool.self, at: 0)
            guard locked else { return }
            do {
                try await fanOutLocked(id, logger: logger)
                _ = try? await lock.query("SELECT pg_advisory_unlock(hashtext(\(key)))")
            } catch {
                _ = try? await lock.query("SELECT pg_advisory_unlock(hashtext(\(key)))")
                throw error
            }
        }
    }

    private func fanOutLocked(_ id: UUID, logger: Logger) async throws {
        guard let bulletin = try await database.withConnection({ try await Bulletins.load(id, on: $0) }),
            bulletin.state == "sending"
        else { return }
        let content = bulletin.content
        let started = ContinuousClock.now
        var messages: [Channel: [Language: RenderedMessage]] = [:]
        for channel in content.channels {
            messages[channel] = BulletinRendering.messages(
                content, channel: channel, templates: configuration.templates)
        }
        guard try await postToChannels(bulletin, messages: messages[.telegram] ?? [:], logger: logger) else {
            logger.info("fan-out stopped: the bulletin is no longer sending")
            return
        }
        let jobs = JobBatcher(
            bulletin: bulletin, messages: messages, chunk: configuration.chunk, amqp: amqp, database: database
        )
        // Deliveries written before a crash whose jobs the broker may not have confirmed: published again
        // (dispatchers skip those already sent).
        if let written = bulletin.deliveryIDs, written.upperBound > bulletin.fanoutCursor {
            try await republish(
                bulletin, from: max(bulletin.fanoutCursor, written.lowerBound - 1), to: written.upperBound, jobs: jobs)
        }
        if !bulletin.audienceCreated {
            guard try await writeAudience(bulletin, jobs: jobs, logger: logger) else {
                logger.info(
                    "fan-out stopped: the bulletin is no longer sending", metadata: ["deliveries": "\(jobs.published)"])
                return
            }
        }
        try await jobs.flush()
        try await jobs.confirm(persist: true)
        try await database.query(
            """
            UPDATE bulletins SET state = 'sent', audience_created_at = coalesce(audience_created_at, now()),
                                 fanout_completed_at = now(), updated_at = now()
             WHERE id = \(id) AND state = 'sending'
            """
        )
        fannedOut.increment()
        jobsPublished.increment(by: jobs.jobs)
        deliveriesQueued.increment(by: jobs.published)
        let elapsed = ContinuousClock.now - started
        logger.info(
            "bulletin fanned out",
            metadata: ["jobs": "\(jobs.jobs)", "deliveries": "\(jobs.published)", "elapsed": "\(elapsed)"]
        )
    }

    /// Posts the bulletin to the Telegram public channels configured for it, once per channel and language: the
    /// posts are written as deliveries without a subscriber (in a transaction that first updates the bulletin
    /// while it is `sending`, as the audience's blocks do, so that a cancel sees them or prevents them), then the
    /// jobs of those still queued are published and confirmed; after a crash they are published again, and the
    /// dispatchers skip a post already sent. Returns false when the bulletin is no longer `sending`.
    private func postToChannels(
        _ bulletin: StoredBulletin, messages: [Language: RenderedMessage], logger: Logger
    ) async throws -> Bool {
        let content = bulletin.content
        guard content.channels.contains(.telegram), !messages.isEmpty else { return true }
        var targets: [(chat: String, language: Language)] = []
        for post in configuration.channelPosts
        where post.matches(topics: content.topics, urgent: content.urgency == .urgent)
            && !targets.contains(where: { $0.chat == post.chat && $0.language == post.language })
        {
            targets.append((post.chat, post.language))
        }
        guard !targets.isEmpty else { return true }
        let id = bulletin.id
        let queued: [Recipient]? = try await database.withTransaction { connection in
            let sending = try await connection.query(
                "UPDATE bulletins SET updated_at = now() WHERE id = \(id) AND state = 'sending' RETURNING id"
            ).rows
            guard !sending.isEmpty else { return nil }
            // Written before the audience's first block only, so that their ids stay out of its range; after a
            // crash, those written are published again below.
            for target in targets where bulletin.deliveryIDs == nil {
                try await connection.query(
                    """
                    WITH post AS (
                        INSERT INTO deliveries (bulletin_id, subscriber_id, channel)
                        SELECT \(id), NULL, 'telegram'
                         WHERE NOT EXISTS (
                               SELECT 1 FROM channel_posts
                                WHERE bulletin_id = \(id) AND chat = \(target.chat) AND language = \(target.language.rawValue))
                        RETURNING id
                    )
                    INSERT INTO channel_posts (bulletin_id, chat, language, delivery_id)
                    SELECT \(id), \(target.chat), \(target.language.rawValue), id FROM post
                    """
                )
            }
            return try await connection.query(
                """
                SELECT p.delivery_id, p.chat, p.language
                  FROM channel_posts p JOIN deliveries d ON d.id = p.delivery_id
                 WHERE p.bulletin_id = \(id) AND d.state = 'queued'
                 ORDER BY p.delivery_id
                """
            ).rows.map { row in
                let (deliveryID, chat, language) = try row.decode(Int64.self, String.self, String.self)
                return Recipient(
                    deliveryID: deliveryID, address: chat, language: Language(rawValue: language) ?? .italian)
            }
        }
        guard let queued else { return false }
        for recipient in queued {
            // Each post in the channel's language (Italian when the bulletin lacks it, as for subscribers).
            guard let message = messages[recipient.language] ?? messages[.italian] else { continue }
            try await publishJob(
                of: bulletin, channel: .telegram, messages: [recipient.language: message], recipients: [recipient],
                on: amqp
            )
        }
        if !queued.isEmpty {
            try await amqp.waitForConfirms()
            logger.info(
                "bulletin posted to Telegram channels",
                metadata: ["posts": "\(queued.count)", "channels": "\(queued.map(\.address).joined(separator: " "))"]
            )
        }
        return true
    }

    /// Publishes the jobs of the bulletin's queued deliveries with ids in `(after, through]`.
    private func republish(_ bulletin: StoredBulletin, from after: Int64, to through: Int64, jobs: JobBatcher)
        async throws
    {
        try await database.withConnection { connection in
            try await connection.withRows(
                """
                SELECT d.id, d.subscriber_id, d.channel, s.address, s.language
                  FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                 WHERE d.id > \(after) AND d.id <= \(through) AND d.bulletin_id = \(bulletin.id) AND d.state = 'queued'
                 ORDER BY d.id
                """
            ) { rows in
                for try await row in rows {
                    let (deliveryID, subscriberID, channelName, address, languageCode) = try row.decode(
                        Int64.self, Int64.self, String.self, String.self, String.self
                    )
                    guard let channel = Channel(rawValue: channelName) else { continue }
                    try await jobs.add(
                        Recipient(
                            deliveryID: deliveryID, subscriberID: subscriberID, address: address,
                            language: Language(rawValue: languageCode) ?? .italian
                        ),
                        channel: channel
                    )
                    if jobs.sinceFlush >= configuration.checkpoint {
                        try await jobs.flush()
                        try await jobs.confirm(persist: true)
                    }
                }
            }
        }
    }

    /// Streams the rest of the audience (active subscribers of the bulletin's channels following one of its topics,
    /// everyone active when urgent) from `audience_cursor` on and writes its deliveries with COPY, a block of
    /// `checkpoint` at a time, each block in a transaction that moves the cursor. Two blocks are written at once on
    /// two connections (PostgreSQL's COPY is the critical path, and one backend uses one core), their ids reserved
    /// and their transactions committed in block order, so that the cursor never passes a block not committed; while
    /// they are written, the block before them is published (the one before it confirmed). Returns false when the
    /// bulletin stopped being `sending` (cancelled).
    private func writeAudience(_ bulletin: StoredBulletin, jobs: JobBatcher, logger: Logger) async throws -> Bool {
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
                                    guard try await advance(block) else { throw Stopped() }
                                    block.removeAll(keepingCapacity: true)
                                }
                            }
                        }
                        if !block.isEmpty { guard try await advance(block) else { throw Stopped() } }
                        finished = try await advance(nil)
                    } catch is Stopped {
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
    private static func reserve(_ count: Int, on connection: PostgresConnection) async throws -> Int64 {
        try await connection.query("SELECT reserve_delivery_ids(\(Int64(count)))").rows[0].decode(Int64.self, at: 0)
    }

    /// Writes a block of the audience's deliveries under the ids reserved for it and, once the block before it has
    /// committed, moves the bulletin's cursors, in one transaction; returns the block's first delivery id, or nil
    /// (having written nothing) when the bulletin is no longer `sending` or the block before it stopped.
    private static func write(
        _ rows: [AudienceRow], of bulletin: UUID, first: Int64, confirmed: Int64,
        after previous: Task<BlockWrite.Outcome, any Error>?, on connection: PostgresConnection
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
                if let previous, try await previous.value.first == nil { throw Stopped() }
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
                guard moved == 1 else { throw Stopped() }
                return first
            }
        } catch is Stopped {
            return nil
        }
    }
}

/// A block of the audience being written: its rows, its reserved ids, its transaction.
private struct BlockWrite: Sendable {
    struct Outcome: Sendable {
        var first: Int64?
        var took: Duration
    }

    let rows: [AudienceRow]
    let reserved: Task<Int64, any Error>
    let committed: Task<Outcome, any Error>
}

private struct Stopped: Error {}

/// One subscriber of a bulletin's audience, as streamed.
private struct AudienceRow: Sendable {
    var subscriberID: Int64
    var channel: Channel
    var address: String
    var language: Language
}

/// Publishes a fan-out's jobs as ``JobChunks`` fills them; `flush()` publishes the partial jobs, `confirm(persist:)`
/// waits for the broker's confirms and moves the confirmed cursor past what was flushed.
private final class JobBatcher {
    let bulletin: StoredBulletin
    let messages: [Channel: [Language: RenderedMessage]]
    let amqp: AMQPConnection
    let database: PostgresClient
    private var chunks: JobChunks
    private(set) var jobs = 0

    var confirmedCursor: Int64 { chunks.confirmedCursor }
    var sinceFlush: Int { chunks.sinceFlush }
    var published: Int { chunks.confirmedCount }

    init(
        bulletin: StoredBulletin, messages: [Channel: [Language: RenderedMessage]], chunk: Int, amqp: AMQPConnection,
        database: PostgresClient
    ) {
        self.bulletin = bulletin
        self.messages = messages
        self.amqp = amqp
        self.database = database
        chunks = JobChunks(cursor: bulletin.fanoutCursor, chunk: chunk)
    }

    func add(_ recipient: Recipient, channel: Channel) async throws {
        if let full = chunks.add(recipient, channel: channel) { try await publish(channel, full) }
    }

    /// Publishes the partial jobs: every recipient added so far is then in a published job.
    func flush() async throws {
        for job in chunks.flush() { try await publish(job.channel, job.recipients) }
    }

    /// Waits for the broker to confirm every job published so far; the recipients up to the last `flush()` count
    /// as queued then. With `persist`, the bulletin's `fanout_cursor` moves too (while the audience is written,
    /// the block transactions move it instead, holding the bulletin's row).
    func confirm(persist: Bool) async throws {
        guard chunks.awaitsConfirm else { return }
        try await amqp.waitForConfirms()
        chunks.confirmed()
        if persist {
            try await database.query(
                """
                UPDATE bulletins SET fanout_cursor = \(chunks.confirmedCursor), updated_at = now()
                 WHERE id = \(bulletin.id) AND state = 'sending'
                """
            )
        }
    }

    private func publish(_ channel: Channel, _ recipients: [Recipient]) async throws {
        try await publishJob(
            of: bulletin, channel: channel, messages: messages[channel] ?? [:], recipients: recipients, on: amqp
        )
        jobs += 1
    }
}

/// Publishes a delivery job of a bulletin to its channel's dispatchers (urgent ones to the urgent queue); the
/// caller waits for the broker's confirms.
private func publishJob(
    of bulletin: StoredBulletin, channel: Channel, messages: [Language: RenderedMessage], recipients: [Recipient],
    on amqp: AMQPConnection
) async throws {
    let job = DeliveryJob(
        bulletinID: bulletin.id, channel: channel, urgent: bulletin.content.urgency == .urgent,
        messages: messages, recipients: recipients, correlationID: bulletin.correlationID
    )
    let (message, routingKey) = BanditoreTopology.delivery(job)
    try await amqp.publish(message, exchange: BanditoreTopology.deliveriesExchange, routingKey: routingKey)
}
