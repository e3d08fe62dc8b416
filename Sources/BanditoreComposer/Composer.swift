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
/// A fan-out, under a PostgreSQL advisory lock on the bulletin (one composer replica at a time):
/// 1. the audience becomes `deliveries` rows in one `INSERT … SELECT` inside PostgreSQL (active subscribers of the
///    bulletin's channels who follow one of its topics; everyone active for an urgent bulletin), so the composer
///    never holds the audience;
/// 2. the queued deliveries after `fanout_cursor` are streamed in id order and published as jobs of `chunk`
///    recipients per channel, the message rendered per language; every `checkpoint` rows the publishes are
///    confirmed and the cursor moves past them. After a crash the fan-out resumes at the cursor: only the jobs of
///    the last unconfirmed stretch can be published twice, and dispatchers skip deliveries already sent.
public final class Composer: Service, Sendable {
    public struct Configuration: Sendable {
        public var hours: ServiceHours
        public var templates: BulletinTemplates
        public var chunk: Int
        public var checkpoint: Int
        public var pollInterval: Duration

        public init(
            hours: ServiceHours = .default, templates: BulletinTemplates = .init(), chunk: Int = 500,
            checkpoint: Int = 10_000, pollInterval: Duration = .seconds(1)
        ) {
            self.hours = hours
            self.templates = templates
            self.chunk = max(1, chunk)
            self.checkpoint = max(self.chunk, checkpoint)
            self.pollInterval = pollInterval
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
        if !bulletin.audienceCreated {
            let created = try await database.withTransaction { connection -> Int? in
                // The bulletin's row lock makes the audience once, whatever else holds or lost the advisory lock.
                let pending = try await connection.query(
                    "SELECT audience_created_at IS NULL FROM bulletins WHERE id = \(id) FOR UPDATE"
                ).rows.first?.decode(Bool.self, at: 0)
                guard pending == true else { return nil }
                let inserted = try await connection.query(
                    """
                    INSERT INTO deliveries (bulletin_id, subscriber_id, channel)
                    SELECT \(id), s.id, s.channel FROM subscribers s
                     WHERE s.active AND s.channel = ANY(\(content.channels.map(\.rawValue))::text[])
                       AND (\(content.urgency == .urgent) OR EXISTS (
                            SELECT 1 FROM subscriber_topics t
                             WHERE t.subscriber_id = s.id AND t.topic = ANY(\(content.topics)::text[])))
                     ORDER BY s.id
                    """
                ).affectedRows
                try await connection.query(
                    "UPDATE bulletins SET audience_created_at = now(), updated_at = now() WHERE id = \(id)"
                )
                return inserted
            }
            if let created {
                let elapsed = ContinuousClock.now - started
                logger.info("audience created", metadata: ["deliveries": "\(created)", "elapsed": "\(elapsed)"])
            }
        }
        var messages: [Channel: [Language: RenderedMessage]] = [:]
        for channel in content.channels {
            messages[channel] = BulletinRendering.messages(content, channel: channel, templates: configuration.templates)
        }
        let chunk = configuration.chunk
        let checkpoint = configuration.checkpoint
        var pending: [Channel: [Recipient]] = [:]
        var sinceCheckpoint = 0
        var lastID = bulletin.fanoutCursor
        var jobs = 0
        var published = 0
        func publish(_ channel: Channel, _ recipients: [Recipient]) async throws {
            let job = DeliveryJob(
                bulletinID: id, channel: channel, urgent: content.urgency == .urgent, messages: messages[channel] ?? [:],
                recipients: recipients, correlationID: bulletin.correlationID
            )
            try await amqp.publish(
                .json(
                    encoding: job, type: DeliveryJob.messageType, messageID: job.id, correlationID: job.correlationID,
                    priority: job.urgent ? BanditoreTopology.maxPriority : 0
                ),
                exchange: BanditoreTopology.deliveriesExchange, routingKey: channel.rawValue
            )
            jobs += 1
        }
        func confirm() async throws {
            for (channel, recipients) in pending where !recipients.isEmpty { try await publish(channel, recipients) }
            pending.removeAll(keepingCapacity: true)
            try await amqp.waitForConfirms()
            try await database.query(
                "UPDATE bulletins SET fanout_cursor = \(lastID), updated_at = now() WHERE id = \(id) AND state = 'sending'"
            )
            published += sinceCheckpoint
            sinceCheckpoint = 0
        }
        try await database.withConnection { connection in
            try await connection.withRows(
                """
                SELECT d.id, d.subscriber_id, d.channel, s.address, s.language
                  FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                 WHERE d.bulletin_id = \(id) AND d.id > \(bulletin.fanoutCursor) AND d.state = 'queued'
                 ORDER BY d.id
                """
            ) { rows in
                for try await row in rows {
                    let (deliveryID, subscriberID, channelName, address, languageCode) = try row.decode(
                        Int64.self, Int64.self, String.self, String.self, String.self
                    )
                    guard let channel = Channel(rawValue: channelName) else { continue }
                    pending[channel, default: []].append(
                        Recipient(
                            deliveryID: deliveryID, subscriberID: subscriberID, address: address,
                            language: Language(rawValue: languageCode) ?? .italian
                        )
                    )
                    if pending[channel]!.count >= chunk {
                        try await publish(channel, pending[channel]!)
                        pending[channel]!.removeAll(keepingCapacity: true)
                    }
                    lastID = deliveryID
                    sinceCheckpoint += 1
                    if sinceCheckpoint >= checkpoint { try await confirm() }
                }
            }
        }
        try await confirm()
        try await database.query(
            """
            UPDATE bulletins SET state = 'sent', fanout_completed_at = now(), updated_at = now()
             WHERE id = \(id) AND state = 'sending'
            """
        )
        fannedOut.increment()
        jobsPublished.increment(by: jobs)
        deliveriesQueued.increment(by: published)
        let elapsed = ContinuousClock.now - started
        logger.info(
            "bulletin fanned out",
            metadata: ["jobs": "\(jobs)", "deliveries": "\(published)", "elapsed": "\(elapsed)"]
        )
    }
}
