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

    let configuration: Configuration
    let amqp: AMQPConnection
    let database: DatabasePool
    let logger: Logger
    private let poison = Counter(label: "banditore_composer_poison_total")
    let failures = Counter(label: "banditore_composer_failures_total")
    let scheduled = Counter(label: "banditore_composer_scheduled_total")
    private let fannedOut = Counter(label: "banditore_composer_fanouts_total")
    private let jobsPublished = Counter(label: "banditore_composer_jobs_total")
    private let deliveriesQueued = Counter(label: "banditore_composer_deliveries_total")

    public init(configuration: Configuration, amqp: AMQPConnection, database: DatabasePool, logger: Logger) {
        self.configuration = configuration
        self.amqp = amqp
        self.database = database
        self.logger = logger
    }

    public func run() async throws {
        let consumer = try await amqp.consume(queue: BanditoreTopology.composerBulletins, prefetch: 4)
        logger.info("composer consuming", metadata: ["amqp.queue": "\(BanditoreTopology.composerBulletins)"])
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
            bulletin.state == .sending
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
}
