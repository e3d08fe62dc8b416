import BanditoreAMQP
import BanditoreCore
import BanditorePostgres
import BanditoreRuntime
import Foundation

/// Subscribers, a bulletin and its queued deliveries written straight to the database, and delivery jobs for them
/// published to the broker: what the composer does, for tests and benchmarks of the dispatchers.
public enum DeliveryFixtures {
    /// A valid address of the simulator's shape: WhatsApp `39347…`, Telegram chat ids from 6,000,000,000, WeChat
    /// OpenIDs `oFIX…` (28 characters).
    public static func address(_ channel: Channel, _ index: Int, salt: Int = 0) -> String {
        switch channel {
        case .whatsapp: "39347" + String(format: "%07d", (index + salt * 100_000) % 10_000_000)
        case .telegram: String(6_000_000_000 + Int64(salt) * 1_000_000 + Int64(index))
        case .wechat: "oFIX" + String(format: "%06d", salt % 1_000_000) + String(format: "%018d", index)
        }
    }

    /// Inserts `addresses` as active Italian subscribers of `channel` (or reactivates them), a bulletin, and one
    /// queued delivery per subscriber; returns the recipients with their delivery ids, in `addresses` order.
    public static func seed(
        _ database: DatabasePool, channel: Channel, addresses: [String], bulletinID: UUID = UUID()
    ) async throws -> [Recipient] {
        try await database.query(
            """
            INSERT INTO bulletins (id, title, body, topics, channels, urgency, state)
            VALUES (\(bulletinID), 'fixture', '{"it":"fixture"}', '{farmacie}', \([channel.rawValue]), 'normal', 'sending')
            ON CONFLICT (id) DO NOTHING
            """
        )
        var recipients: [Recipient] = []
        recipients.reserveCapacity(addresses.count)
        var start = 0
        while start < addresses.count {
            let chunk = Array(addresses[start..<min(start + 10_000, addresses.count)])
            start += chunk.count
            let rows = try await database.query(
                """
                WITH s AS (
                    INSERT INTO subscribers (channel, address)
                    SELECT \(channel.rawValue), a FROM unnest(\(chunk)::text[]) AS a
                    ON CONFLICT (channel, address) DO UPDATE SET active = true, unsubscribed_at = NULL
                    RETURNING id, address
                )
                INSERT INTO deliveries (bulletin_id, subscriber_id, channel)
                SELECT \(bulletinID), s.id, \(channel.rawValue) FROM s
                RETURNING id, subscriber_id
                """
            ).rows
            let subscribers = try await database.query(
                """
                SELECT id, address FROM subscribers WHERE channel = \(channel.rawValue) AND address = ANY(\(chunk)::text[])
                """
            ).rows
            var addressOf: [Int64: String] = [:]
            for row in subscribers {
                let (id, address) = try row.decode(Int64.self, String.self)
                addressOf[id] = address
            }
            let ids = try rows.map { try $0.decode(Int64.self, at: 0) }
            if let first = ids.min(), let last = ids.max() {
                try await database.query(
                    """
                    UPDATE bulletins SET first_delivery_id = least(first_delivery_id, \(first)),
                                         last_delivery_id = greatest(last_delivery_id, \(last))
                     WHERE id = \(bulletinID)
                    """
                )
            }
            var byAddress: [String: Recipient] = [:]
            for row in rows {
                let (deliveryID, subscriberID) = try row.decode(Int64.self, Int64.self)
                if let address = addressOf[subscriberID] {
                    byAddress[address] = Recipient(deliveryID: deliveryID, subscriberID: subscriberID, address: address)
                }
            }
            recipients += chunk.compactMap { byAddress[$0] }
        }
        return recipients
    }

    /// The bulletin message each channel's dispatcher sends for these tests: a WhatsApp template, Telegram text, a
    /// WeChat template.
    public static func message(_ channel: Channel, text: String = "Farmacia di turno: via Roma 1") -> RenderedMessage {
        switch channel {
        case .whatsapp: .whatsappTemplate("banditore_bulletin", language: "it", parameters: ["Comune", text])
        case .telegram: .text(text)
        case .wechat: .wechatTemplate("TPL_BULLETIN", fields: ["title": "Comune", "content": text])
        }
    }

    /// Publishes the recipients as jobs of `chunk` recipients each (confirmed); returns the jobs.
    @discardableResult
    public static func publishJobs(
        _ amqp: AMQPConnection, channel: Channel, recipients: [Recipient], bulletinID: UUID?, chunk: Int = 100,
        urgent: Bool = false, message: RenderedMessage? = nil
    ) async throws -> [DeliveryJob] {
        let encoded = encodeJobs(
            channel: channel, recipients: recipients, bulletinID: bulletinID, chunk: chunk, urgent: urgent,
            message: message
        )
        try await publish(amqp, encoded)
        return encoded.map(\.job)
    }

    /// A job and the broker message that carries it.
    public struct EncodedJob: Sendable {
        public var job: DeliveryJob
        public var message: AMQPMessage
    }

    /// The recipients as jobs of `chunk` recipients each, encoded as the composer publishes them: a benchmark
    /// encodes them before it starts its clock, so that its own work is not counted as the dispatchers'.
    public static func encodeJobs(
        channel: Channel, recipients: [Recipient], bulletinID: UUID?, chunk: Int = 100, urgent: Bool = false,
        message: RenderedMessage? = nil
    ) -> [EncodedJob] {
        var jobs: [EncodedJob] = []
        var start = 0
        while start < recipients.count {
            let end = min(start + chunk, recipients.count)
            let job = DeliveryJob(
                bulletinID: bulletinID, channel: channel, urgent: urgent,
                messages: [.italian: message ?? Self.message(channel)], recipients: Array(recipients[start..<end])
            )
            // The message as the composer publishes it.
            jobs.append(EncodedJob(job: job, message: BanditoreTopology.delivery(job).message))
            start = end
        }
        return jobs
    }

    /// Publishes encoded jobs to the deliveries exchange, routed by their channel and rank, and waits for the confirms.
    public static func publish(_ amqp: AMQPConnection, _ jobs: [EncodedJob]) async throws {
        for encoded in jobs {
            try await amqp.publish(
                encoded.message, exchange: BanditoreTopology.deliveriesExchange,
                routingKey: BanditoreTopology.delivery(encoded.job).routingKey
            )
        }
        try await amqp.waitForConfirms()
    }
}
