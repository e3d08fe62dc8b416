import BanditoreAMQP
import BanditoreChannels
import BanditoreCore
import BanditorePostgres
import BanditoreRuntime
import BanditoreStore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Consumes a channel's delivery jobs and delivers them.
///
/// Jobs come from three queues, one per rank (``DeliveryRank``), each with a consumer of its own: urgent bulletins,
/// replies to citizens and normal bulletins. An urgent job is taken at once whatever else the replica holds, and
/// inside the replica the places for sends in flight and the slots of the channel's rate limit go to the highest
/// rank waiting; lower ranks resume where they stopped. With paid broadcast on (Telegram), urgent sends carry
/// `allow_paid_broadcast` and take slots of a rate limit of their own.
///
/// For each job: recipients whose delivery is no longer `queued` (sent, failed, cancelled) are skipped, and so are
/// subscribers who left (recorded `skipped`); every other recipient waits for its own pace (per-recipient interval)
/// and a slot of the channel's shared rate limit, then is sent with up to `maxInFlight` sends in flight per replica
/// across jobs. Outcomes go to the ``StatusWriter`` as they come. Failures that may pass (5xx, timeouts, 429,
/// expired tokens) are published again as a job of those recipients to the delay queue of the next backoff step
/// (with jitter, and no sooner than the provider's hint); once `maxAttempts` are spent they are recorded failed
/// and dead-lettered. An address the provider refuses for good is recorded failed and `recipient.unreachable` is
/// published. The job is acknowledged only once its outcomes are committed and its follow-up messages confirmed.
/// A job that cannot be decoded goes to the dead-letter queue at once.
///
/// On graceful shutdown it stops taking jobs and starting sends, lets the sends in flight finish, republishes each
/// unfinished job's remaining recipients as a new job, and returns.
public final class Dispatcher: Service, Sendable {
    public struct Configuration: Sendable {
        public var channel: Channel
        /// Sends in flight per replica, across jobs.
        public var maxInFlight: Int
        /// Jobs taken from the normal and the urgent queue at once.
        public var prefetch: Int
        /// Jobs taken from the replies queue at once (a reply is a job of one recipient).
        public var replyPrefetch: Int
        /// Sends per recipient before giving up (the first included).
        public var maxAttempts: Int
        /// Least time between two messages to the same address.
        public var recipientInterval: Duration
        /// Added to `recipientInterval`, measured from the start of each send: what the request may take to reach
        /// the provider.
        public var recipientMargin: Duration
        /// Urgent bulletins go with Telegram's paid broadcast (`allow_paid_broadcast`), at its own rate limit.
        public var paidBroadcastForUrgent: Bool
        /// The per-recipient pace is shared by every replica through PostgreSQL (each send claims its address), not
        /// only kept inside this one.
        public var sharedPace: Bool
        /// How often outcomes are committed.
        public var statusInterval: Duration
        /// Outcomes a replica holds uncommitted before it waits to start more sends: with `maxInFlight`, what a
        /// replica killed outright may have sent without the database knowing (and the next one repeats).
        public var maxUnrecorded: Int
        /// Multiplies the delay queues' waits (1 s, 5 s, 30 s, 2 min, 10 min); below 1 shortens them, through the
        /// messages' own expiry. A provider's retry hint is waited in full whatever the scale.
        public var retryBackoffScale: Double

        public init(
            channel: Channel, maxInFlight: Int = 64, prefetch: Int = 4, replyPrefetch: Int = 16, maxAttempts: Int = 6,
            recipientInterval: Duration? = nil, recipientMargin: Duration = .milliseconds(250),
            paidBroadcastForUrgent: Bool = false, sharedPace: Bool = true, statusInterval: Duration = .milliseconds(50),
            maxUnrecorded: Int = 1_000, retryBackoffScale: Double = 1
        ) {
            self.channel = channel
            self.maxInFlight = max(1, maxInFlight)
            self.prefetch = max(1, prefetch)
            self.replyPrefetch = max(1, replyPrefetch)
            self.maxAttempts = max(1, maxAttempts)
            self.recipientInterval = recipientInterval ?? Self.defaultRecipientInterval(channel)
            self.recipientMargin = max(.zero, recipientMargin)
            self.paidBroadcastForUrgent = paidBroadcastForUrgent && channel == .telegram
            self.sharedPace = sharedPace
            self.statusInterval = statusInterval
            self.maxUnrecorded = max(1, maxUnrecorded)
            self.retryBackoffScale = min(max(retryBackoffScale, 0.001), 1)
        }

        /// WhatsApp about one per 6 s per user, Telegram one per second per chat, WeChat none.
        public static func defaultRecipientInterval(_ channel: Channel) -> Duration {
            switch channel {
            case .whatsapp: .seconds(6)
            case .telegram: .seconds(1)
            case .wechat: .zero
            }
        }
    }

    public let configuration: Configuration
    private let sender: any ChannelSender
    private let amqp: AMQPConnection
    private let database: DatabasePool
    private let rateLimiter: SharedRateLimiter
    /// Telegram's paid broadcast limit, for urgent sends when the town enables it.
    private let paidRateLimiter: SharedRateLimiter?
    private let logger: Logger
    private let metrics: DispatchMetrics
    private let writer: StatusWriter
    private let inFlight: AsyncSemaphore
    private let cancellations: BulletinCancellations
    private let pacer: RecipientPacer
    /// The pace across replicas; nil when the channel has none or it is kept per replica.
    private let sharedPace: SharedRecipientPace?
    private let stopping = Atomic<Bool>(false)
    private let sendsInFlight = Atomic<Int>(0)
    /// Jobs taken and not yet settled.
    private let activeJobs = Atomic<Int>(0)
    /// Deliveries a job of this replica is sending, from the moment it picks them until their outcomes are committed:
    /// another job naming one of them meanwhile (a composer that crashed publishes its last jobs again) leaves it
    /// to the first instead of reading it `queued` and sending it a second time.
    private let claimed = Mutex<Set<Int64>>([])

    public init(
        configuration: Configuration, sender: any ChannelSender, amqp: AMQPConnection, database: DatabasePool,
        rateLimiter: SharedRateLimiter, paidRateLimiter: SharedRateLimiter? = nil, logger: Logger
    ) {
        self.configuration = configuration
        self.sender = sender
        self.amqp = amqp
        self.database = database
        self.rateLimiter = rateLimiter
        self.paidRateLimiter = configuration.paidBroadcastForUrgent ? paidRateLimiter : nil
        var logger = logger
        logger[metadataKey: "channel"] = "\(configuration.channel.rawValue)"
        self.logger = logger
        let metrics = DispatchMetrics(channel: configuration.channel)
        self.metrics = metrics
        writer = StatusWriter(
            channel: configuration.channel.rawValue, database: database, interval: configuration.statusInterval,
            maxUnrecorded: configuration.maxUnrecorded, logger: logger,
            onCommit: { metrics.statusesWritten.increment(by: $0) }
        )
        inFlight = AsyncSemaphore(limit: configuration.maxInFlight)
        cancellations = BulletinCancellations(database: database)
        pacer = RecipientPacer(interval: configuration.recipientInterval, margin: configuration.recipientMargin)
        sharedPace =
            configuration.sharedPace && configuration.recipientInterval > .zero
            ? SharedRecipientPace(
                channel: configuration.channel.rawValue,
                hold: configuration.recipientInterval + configuration.recipientMargin,
                interval: configuration.recipientInterval + .milliseconds(50), database: database
            ) : nil
    }

    /// The channel's normal queue, whose dead letters hold every rank's.
    private var queue: String { BanditoreTopology.dispatchQueue(configuration.channel) }

    public func run() async throws {
        var opened: [AMQPConsumer] = []
        for rank in DeliveryRank.allCases {
            let name = BanditoreTopology.dispatchQueue(configuration.channel, rank)
            let prefetch = rank == .reply ? configuration.replyPrefetch : configuration.prefetch
            do {
                opened.append(try await amqp.consume(queue: name, prefetch: UInt16(clamping: prefetch)))
            } catch {
                for consumer in opened { consumer.cancel() }
                throw error
            }
        }
        let consumers = opened
        logger.info(
            "dispatching",
            metadata: [
                "amqp.queue":
                    "\(DeliveryRank.allCases.map { BanditoreTopology.dispatchQueue(configuration.channel, $0) })"
            ]
        )
        await withTaskGroup { outer in
            let writer = self.writer
            outer.addTask { await writer.run() }
            outer.addTask {
                // Draining: stop starting sends, wait until every job in hand is settled (acknowledged after its
                // rest was handed back), and only then cancel the consumers, whose channel closes and returns the
                // jobs that were prefetched but not started.
                do { try await gracefulShutdown() } catch { return }
                self.logger.info("draining: no new jobs or sends; finishing those in flight")
                self.stopping.store(true, ordering: .relaxed)
                while self.activeJobs.load(ordering: .relaxed) > 0 { try? await Task.sleep(for: .milliseconds(20)) }
                for consumer in consumers { consumer.cancel() }
            }
            await withTaskGroup { ranks in
                for consumer in consumers {
                    ranks.addTask {
                        await self.consume(consumer)
                        // One consumer gone (the broker's channel closed): the others go too, and the service
                        // ends for its supervisor to restart it.
                        for other in consumers { other.cancel() }
                    }
                }
                await ranks.waitForAll()
            }
            outer.cancelAll()  // the writer commits what is left and returns
        }
        logger.info("dispatcher stopped")
    }

    private func consume(_ consumer: AMQPConsumer) async {
        await withTaskGroup { jobs in
            do {
                for try await delivery in consumer {
                    if self.stopping.load(ordering: .relaxed) { continue }  // returned to the queue on cancel
                    self.activeJobs.add(1, ordering: .relaxed)
                    jobs.addTask {
                        await self.handle(delivery)
                        self.activeJobs.subtract(1, ordering: .relaxed)
                    }
                }
            } catch {
                self.logger.error("consumer ended", metadata: ["error": "\(String(reflecting: error))"])
            }
            await jobs.waitForAll()
        }
    }

    /// Claims the address for a send starting now in the pace shared by the replicas (without it, at once). Another
    /// replica sent to it within its interval: waits until it is free and takes another slot then (the first goes
    /// unused). False when the database or the rate limit cannot be reached: the send is retried later.
    private func claimAcrossReplicas(
        _ address: String, rank: DeliveryRank, ticket: UInt64, limiter: SharedRateLimiter, logger: Logger
    ) async -> Bool {
        guard let sharedPace else { return true }
        do {
            while let busy = try await sharedPace.claim(address) {
                metrics.paceWaits.increment()
                try await Task.sleep(for: busy)
                try await limiter.acquire(rank: rank, ticket: ticket)
            }
            return true
        } catch {
            logger.warning("recipient pace unavailable", metadata: ["error": "\(String(reflecting: error))"])
            return false
        }
    }

    /// The rate limit a rank's sends take their slots from.
    private func limiter(for rank: DeliveryRank) -> SharedRateLimiter {
        rank == .urgent ? paidRateLimiter ?? rateLimiter : rateLimiter
    }

    // MARK: Jobs

    private func handle(_ delivery: AMQPDelivery) async {
        let settlement = Settlement(what: "job", logger: logger, poison: metrics.poison)
        let channel = configuration.channel
        let decoded = settlement.decode(from: delivery, reading: DeliveryJob.init(json:)) { job in
            guard job.channel == channel else {
                throw DispatchError(.configuration, detail: "job for \(job.channel.rawValue)")
            }
        }
        guard let job = decoded else { return }
        var logger = self.logger
        logger[metadataKey: "job.id"] = "\(job.id)"
        if let correlation = job.correlationID { logger[metadataKey: "correlation.id"] = "\(correlation)" }
        if let bulletin = job.bulletinID { logger[metadataKey: "bulletin.id"] = "\(bulletin)" }
        // On a failure of the database or the broker the job goes back after a pause (sent recipients are skipped).
        await settlement.acknowledge(delivery, logger: logger) {
            try await process(job, logger: logger)
            metrics.jobs.increment()
        }
    }

    /// What a finished send leaves to do after the job.
    private enum FollowUp: Sendable {
        case none
        case retry(Recipient, hint: Duration?, reason: String)
        case deadLetter(Recipient, reason: String)
        case unreachable(RecipientUnreachable)
    }

    private func process(_ job: DeliveryJob, logger: Logger) async throws {
        let (recipients, unfinished) = try await recipientsToSend(job, logger: logger)
        var claims = recipients.compactMap(\.deliveryID)
        defer { release(claims) }
        let rank = job.rank
        let limiter = limiter(for: rank)
        // The order of the sends: a recipient whose pace is not due yet (a reply went to it moments ago) goes to
        // the end, once, so that the job's sends flow on meanwhile. `order[next...]` is what is not started.
        var order = recipients
        var next = 0
        var started = 0
        let ticket = await limiter.begin(rank)
        let followUps = await withTaskGroup(of: FollowUp.self) { group in
            while next < order.count {
                let recipient = order[next]
                // Stopping, or the broker is gone: this job can no longer be acknowledged and will come back after
                // the reconnect, so starting more of its sends would only repeat them.
                if stopping.load(ordering: .relaxed) || !amqp.isConnected { break }
                if next < recipients.count, next + 1 < order.count, pacer.wait(for: recipient.address) > .zero {
                    order.append(recipient)
                    next += 1
                    continue
                }
                do {
                    try await inFlight.acquire(rank: rank)
                } catch {
                    break  // cancelled: the rest is handed back below
                }
                // A database slower than the sends: wait for it rather than run ahead of what it records.
                await writer.room()
                if stopping.load(ordering: .relaxed) {
                    inFlight.release()
                    break
                }
                do {
                    try await pacer.acquire(recipient.address)
                } catch {
                    inFlight.release()
                    break
                }
                do {
                    let waited = ContinuousClock.now
                    try await limiter.acquire(rank: rank, ticket: ticket)
                    metrics.rateLimitWait.recordNanoseconds((ContinuousClock.now - waited).wholeNanoseconds)
                } catch {
                    pacer.release(recipient.address)
                    inFlight.release()
                    logger.warning("rate limit unavailable", metadata: ["error": "\(String(reflecting: error))"])
                    break
                }
                // The recipient's pace counts from this send, not from when its turn came.
                pacer.sent(recipient.address)
                next += 1
                started += 1
                group.addTask {
                    defer { self.inFlight.release() }
                    // Across replicas: the address is claimed as the send starts, off the job's loop so that the
                    // next recipient's turn does not wait for the database.
                    guard
                        await self.claimAcrossReplicas(
                            recipient.address, rank: rank, ticket: ticket, limiter: limiter, logger: logger
                        )
                    else {
                        return self.record(recipient, .failed(.transient(reason: "recipient pace unavailable")), job)
                    }
                    let followUp = await self.send(recipient, of: job, logger: logger)
                    // The message has arrived by now: the address's pace counts from here at the latest.
                    self.pacer.answered(recipient.address)
                    self.sharedPace?.answered(recipient.address)
                    return followUp
                }
            }
            await limiter.end(rank)
            var followUps = unfinished
            for await followUp in group { followUps.append(followUp) }
            return followUps
        }
        // Events and dead letters before the outcomes are committed: killed in between, the job comes back with its
        // recipients still queued, they are tried again and the event or letter is published again (both are taken
        // twice without harm); the other way round, the recorded failure would skip them and the event be lost.
        try await publishEnds(followUps, of: job, logger: logger)
        // Outcomes before retries: a retry job must not find its recipients' previous attempt still uncommitted.
        await writer.sync()
        // Committed: another job finds them sent or waiting for their retry; and a retry or the rest handed back
        // below must not find them claimed.
        release(claims)
        claims = []
        try await publishRetries(followUps, of: job, logger: logger)
        if next < order.count {
            // Stopping, the broker gone, or the rate limit unreachable: hand the rest to another replica or a later
            // turn (without a broker this throws, and the unacknowledged job itself comes back after the reconnect).
            var rest = job
            rest.id = UUID().uuidString.lowercased()
            rest.recipients = Array(order[next...])
            let (message, routingKey) = BanditoreTopology.delivery(rest)
            try await amqp.publishConfirmed(
                message, exchange: BanditoreTopology.deliveriesExchange, routingKey: routingKey)
            logger.info("unfinished job handed back", metadata: ["recipients": "\(rest.recipients.count)"])
        }
        await writer.sync()
        // One line per job (hundreds of recipients), carrying the bulletin's correlation id to the provider's end.
        var retries = 0
        var deadLettered = 0
        var unreachable = 0
        for followUp in followUps {
            switch followUp {
            case .none: break
            case .retry: retries += 1
            case .deadLetter: deadLettered += 1
            case .unreachable: unreachable += 1
            }
        }
        logger.info(
            "job done",
            metadata: [
                "recipients": "\(job.recipients.count)", "skipped": "\(job.recipients.count - recipients.count)",
                "attempted": "\(started)", "retries": "\(retries)", "dead_lettered": "\(deadLettered)",
                "unreachable": "\(unreachable)", "attempt": "\(job.attempt)",
            ]
        )
    }

    /// The job's recipients that still need this message: for bulletins, those whose delivery is `queued` and whose
    /// subscription is active (the others are recorded `skipped`) or who are a public channel (a delivery without a
    /// subscriber); replies go to everyone they name.
    ///
    /// Also what a replica killed mid-job may have left undone for recipients it had finished: a failure recorded
    /// for an address the provider refused for good whose subscriber is still active (its `recipient.unreachable`
    /// may never have been published), and a recipient recorded as out of attempts (its dead letter may be missing).
    /// Both are published again; the registry and a replay take them twice without harm.
    private func recipientsToSend(_ job: DeliveryJob, logger: Logger) async throws
        -> (recipients: [Recipient], unfinished: [FollowUp])
    {
        if job.isReply { return (job.recipients, []) }
        let ids = job.recipients.compactMap(\.deliveryID)
        let rows = try await database.query(
            """
            SELECT d.id, d.state, COALESCE(s.active, d.subscriber_id IS NULL), COALESCE(d.last_error, ''),
                   d.failure_kind, d.failure_code
              FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id
             WHERE d.id = ANY(\(ids)::bigint[])
            """
        ).rows
        var states: [Int64: (state: DeliveryState, active: Bool, error: String, failure: DeliveryFailure?)] = [:]
        for row in rows {
            let (id, state, active, error, kind, code) = try row.decode(
                Int64.self, DeliveryState.self, Bool.self, String.self, DeliveryFailure.Kind?.self, String?.self
            )
            states[id] = (state, active, error, kind.map { DeliveryFailure($0, code: code) })
        }
        var out: [Recipient] = []
        out.reserveCapacity(job.recipients.count)
        var unfinished: [FollowUp] = []
        var done = 0
        var missing = 0
        for recipient in job.recipients {
            guard let id = recipient.deliveryID, let current = states[id] else {
                missing += 1
                continue
            }
            guard current.state == .queued else {
                done += 1
                if current.state == .failed,
                    let followUp = unfinishedEnd(of: recipient, current.active, current.error, current.failure, job)
                {
                    unfinished.append(followUp)
                }
                continue
            }
            guard current.active else {
                writer.add(
                    .init(deliveryID: id, state: .skipped, error: "unsubscribed", attempted: false))
                metrics.skipped.increment()
                continue
            }
            out.append(recipient)
        }
        // Those another job of this replica is sending now are left to it.
        let picked = out.compactMap(\.deliveryID)
        let taken = claimed.withLock { set in Set(picked.filter { set.insert($0).inserted }) }
        if taken.count < picked.count {
            out.removeAll { recipient in recipient.deliveryID.map { !taken.contains($0) } ?? false }
            logger.info(
                "recipients another job is sending left to it",
                metadata: ["recipients": "\(picked.count - taken.count)"]
            )
        }
        if missing > 0 {
            logger.warning("recipients without a delivery row ignored", metadata: ["recipients": "\(missing)"])
        }
        if done > 0 {
            logger.debug("recipients already handled skipped", metadata: ["recipients": "\(done)"])
        }
        if !unfinished.isEmpty {
            logger.info(
                "events and dead letters of recorded failures published again",
                metadata: ["recipients": "\(unfinished.count)"])
        }
        return (out, unfinished)
    }

    private func release(_ ids: [Int64]) {
        guard !ids.isEmpty else { return }
        claimed.withLock { set in
            for id in ids { set.remove(id) }
        }
    }

    /// The event or dead letter a recorded failure calls for, as ``record(_:_:_:)`` left it to publish.
    private func unfinishedEnd(
        of recipient: Recipient, _ active: Bool, _ error: String, _ failure: DeliveryFailure?, _ job: DeliveryJob
    ) -> FollowUp? {
        guard let failure else { return nil }  // failed by a provider's report: nothing left to do
        switch failure.kind {
        case .gaveUp:
            return .deadLetter(recipient, reason: error)
        case .unreachable:
            guard active, recipient.subscriberID != nil else { return nil }
            return .unreachable(
                RecipientUnreachable(
                    channel: job.channel, address: recipient.address, subscriberID: recipient.subscriberID,
                    code: failure.code ?? "", reason: error, at: Date()
                )
            )
        case .permanent:
            // Refused for good but not gone: nothing left to do.
            return nil
        }
    }

    private static let gaveUp = "gave up after "
    /// How long the channel pauses on a flood signal that gives no hint (WhatsApp's 130429).
    static let defaultFloodPause: Duration = .seconds(1)

    /// Whether the provider drops a repeat of this send: WeChat's template sends carry the delivery's
    /// `client_msg_id`. WhatsApp and Telegram offer no such key, and WeChat's custom (reply) sends none either.
    static func providerDropsRepeat(channel: Channel, message: RenderedMessage, options: SendOptions) -> Bool {
        channel == .wechat && message.kind == .template && options.idempotencyKey != nil
    }

    private func send(_ recipient: Recipient, of job: DeliveryJob, logger: Logger) async -> FollowUp {
        // Cancelled meanwhile: the admin API has marked the unsent deliveries cancelled already.
        if let bulletin = job.bulletinID, await cancellations.isCancelled(bulletin) { return .none }
        guard let message = job.message(for: recipient.language) else {
            return record(recipient, .failed(.permanent(code: "no-message", reason: "job has no message")), job)
        }
        metrics.inFlight.record(sendsInFlight.wrappingAdd(1, ordering: .relaxed).newValue)
        let start = ContinuousClock.now
        let options = SendOptions(
            idempotencyKey: recipient.deliveryID.map(SendOptions.idempotencyKey(deliveryID:)),
            paidBroadcast: job.rank == .urgent && paidRateLimiter != nil
        )
        let outcome = await sender.send(message, to: recipient.address, options: options)
        metrics.sendLatency.recordNanoseconds((ContinuousClock.now - start).wholeNanoseconds)
        metrics.inFlight.record(sendsInFlight.wrappingAdd(-1, ordering: .relaxed).newValue)
        switch outcome {
        case .failed(.unknownOutcome(let reason)):
            // The provider may have taken it: the retry says whether it can deliver twice.
            let dropsRepeat = Self.providerDropsRepeat(channel: job.channel, message: message, options: options)
            logger.warning(
                "send outcome unknown; retrying",
                metadata: [
                    "error": "\(reason)", "recipient": "\(Mask.address(recipient.address))",
                    "delivery.id": "\(recipient.deliveryID.map(String.init) ?? "-")",
                    "retry.may_repeat": "\(!dropsRepeat)",
                ]
            )
        case .failed(.channelThrottled(let hint, let reason)):
            // The provider's flood signal: the whole channel waits, on every replica.
            do {
                try await limiter(for: job.rank).pause(for: hint ?? Self.defaultFloodPause)
            } catch {
                logger.warning(
                    "channel pause not shared",
                    metadata: ["error": "\(String(reflecting: error))", "reason": "\(reason)"])
            }
        case .failed(let failure):
            logger.debug(
                "send failed", metadata: ["failure": "\(failure)", "recipient": "\(Mask.address(recipient.address))"])
        case .sent:
            break
        }
        return record(recipient, outcome, job)
    }

    /// Records an outcome and says what remains to do.
    private func record(_ recipient: Recipient, _ outcome: SendOutcome, _ job: DeliveryJob) -> FollowUp {
        func write(_ state: DeliveryState, id: String? = nil, error: String? = nil, failure: DeliveryFailure? = nil) {
            guard let deliveryID = recipient.deliveryID else { return }
            writer.add(
                .init(
                    deliveryID: deliveryID, state: state, providerMessageID: id, error: error, failure: failure,
                    attempted: true))
        }
        switch outcome {
        case .sent(let id):
            metrics.sent.increment()
            write(.sent, id: id)
            return .none
        case .failed(let failure):
            metrics.failed(failure)
            switch failure {
            case .permanent(let code, let reason):
                let gone = UnreachableRecipient.isGone(channel: job.channel, code: code, reason: reason)
                write(
                    .failed, error: "\(code): \(reason)",
                    failure: DeliveryFailure(gone ? .unreachable : .permanent, code: code))
                // A bulletin's post to a public channel has no subscriber to deactivate.
                if !job.isReply && recipient.subscriberID == nil { return .none }
                guard gone else { return .none }
                return .unreachable(
                    RecipientUnreachable(
                        channel: job.channel, address: recipient.address, subscriberID: recipient.subscriberID,
                        code: code, reason: reason, at: Date()
                    )
                )
            case .transient(let reason), .auth(let reason), .unknownOutcome(let reason):
                return retryOrGiveUp(recipient, job, hint: nil, reason: "\(failure.kind): \(reason)", write: write)
            case .rateLimited(let hint, let reason), .channelThrottled(let hint, let reason):
                return retryOrGiveUp(recipient, job, hint: hint, reason: "rate_limited: \(reason)", write: write)
            }
        }
    }

    private func retryOrGiveUp(
        _ recipient: Recipient, _ job: DeliveryJob, hint: Duration?, reason: String,
        write: (DeliveryState, String?, String?, DeliveryFailure?) -> Void
    ) -> FollowUp {
        if job.attempt + 1 >= configuration.maxAttempts {
            let why = "\(Self.gaveUp)\(job.attempt + 1) attempts: \(reason)"
            write(.failed, nil, why, DeliveryFailure(.gaveUp))
            return .deadLetter(recipient, reason: why)
        }
        write(.queued, nil, reason, nil)
        return .retry(recipient, hint: hint, reason: reason)
    }

    // MARK: Follow-ups

    /// Publishes the `recipient.unreachable` events and the dead letter of the job's finished sends.
    private func publishEnds(_ followUps: [FollowUp], of job: DeliveryJob, logger: Logger) async throws {
        var dead: [Recipient] = []
        var deadReason = ""
        for followUp in followUps {
            switch followUp {
            case .none, .retry:
                break
            case .deadLetter(let recipient, let reason):
                dead.append(recipient)
                deadReason = reason
            case .unreachable(let event):
                metrics.unreachable.increment()
                try await amqp.publishConfirmed(
                    try .json(
                        encoding: event, type: RecipientUnreachable.routingKey,
                        messageID: UUID().uuidString.lowercased()),
                    exchange: BanditoreTopology.eventsExchange, routingKey: RecipientUnreachable.routingKey
                )
            }
        }
        if !dead.isEmpty {
            var letter = job
            letter.id = UUID().uuidString.lowercased()
            letter.attempt = job.attempt + 1
            letter.recipients = dead
            letter.lastError = deadReason
            try await amqp.publishConfirmed(
                try .json(encoding: letter, type: DeliveryJob.messageType, messageID: letter.id),
                exchange: BanditoreTopology.deadExchange, routingKey: queue
            )
            metrics.deadLettered.increment(by: dead.count)
            logger.warning(
                "recipients dead-lettered", metadata: ["recipients": "\(dead.count)", "error": "\(deadReason)"])
        }
    }

    /// Publishes the retries of the job's failed sends, one delayed job per backoff step.
    private func publishRetries(_ followUps: [FollowUp], of job: DeliveryJob, logger: Logger) async throws {
        var retries: [Int: (recipients: [Recipient], reason: String, hint: Duration?)] = [:]
        for case .retry(let recipient, let hint, let reason) in followUps {
            let step = RetryPolicy.step(attempt: job.attempt, hint: hint)
            retries[step, default: ([], reason, nil)].recipients.append(recipient)
            if let hint, hint > (retries[step]?.hint ?? .zero) { retries[step]?.hint = hint }
        }
        for (step, batch) in retries.sorted(by: { $0.key < $1.key }) {
            var retry = job
            retry.id = UUID().uuidString.lowercased()
            retry.attempt = job.attempt + 1
            retry.recipients = batch.recipients
            retry.lastError = batch.reason
            let delay = Int(Double(RetryPolicy.delayMilliseconds(step: step)) * configuration.retryBackoffScale)
            var message = BanditoreTopology.delivery(retry).message
            message.properties.expiration = String(RetryPolicy.jittered(delay, atLeast: batch.hint))
            try await amqp.publishConfirmed(
                message, exchange: BanditoreTopology.retryExchange,
                routingKey: BanditoreTopology.retryRoutingKey(job.channel, job.rank, step: step)
            )
            metrics.retried.increment(by: batch.recipients.count)
            logger.debug(
                "recipients scheduled for retry",
                metadata: [
                    "recipients": "\(batch.recipients.count)", "retry.step": "\(step)", "attempt": "\(retry.attempt)",
                ]
            )
        }
    }

}
