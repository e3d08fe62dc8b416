import BanditoreAMQP
import BanditoreChannels
import BanditoreCore
import BanditorePostgres
import BanditoreRuntime
import BanditoreStore
import Foundation
import Logging

/// Publishes a fan-out's jobs as ``JobChunks`` fills them; `flush()` publishes the partial jobs, `confirm(persist:)`
/// waits for the broker's confirms and moves the confirmed cursor past what was flushed.
final class JobBatcher {
    let bulletin: StoredBulletin
    let messages: [Channel: [Language: RenderedMessage]]
    let amqp: AMQPConnection
    let database: DatabasePool
    private var chunks: JobChunks
    private(set) var jobs = 0

    var confirmedCursor: Int64 { chunks.confirmedCursor }
    var sinceFlush: Int { chunks.sinceFlush }
    var published: Int { chunks.confirmedCount }

    init(
        bulletin: StoredBulletin, messages: [Channel: [Language: RenderedMessage]], chunk: Int, amqp: AMQPConnection,
        database: DatabasePool
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
func publishJob(
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
