import BanditoreAMQP
import BanditoreCore
import BanditorePostgres
import Foundation
import Logging

/// The dead letters of a channel (`dispatch.<channel>.dead`): jobs whose attempts ran out and jobs that could not
/// be decoded. Listing leaves them in place; replaying puts the decodable ones back on the channel's queue with
/// their attempts reset (and their deliveries `queued` again), and leaves the undecodable ones where they are.
public enum DeadLetters {
    public struct Letter: Sendable {
        public var messageID: String?
        /// The job, or nil when the body is not one.
        public var job: DeliveryJob?
        public var bodyBytes: Int
    }

    public struct ReplayReport: Sendable {
        public var replayed = 0
        public var recipients = 0
        public var undecodable = 0
    }

    public static func queue(_ channel: Channel) -> String {
        BanditoreTopology.deadQueue(BanditoreTopology.dispatchQueue(channel))
    }

    /// Reads up to `limit` letters and leaves them in the queue.
    public static func list(_ channel: Channel, amqpURL: String, limit: Int, logger: Logger) async throws -> [Letter] {
        var letters: [Letter] = []
        let connection = try await AMQPConnection.connect(url: amqpURL, logger: logger)
        do {
            try await read(channel, connection: connection, limit: limit) { delivery in
                letters.append(letter(delivery))
            }
        } catch {
            await connection.close()
            throw error
        }
        // Closing without acknowledging returns every letter to the queue, in order.
        await connection.close()
        return letters
    }

    /// Replays up to `limit` letters: each job goes back to `banditore.deliveries` (confirmed) with attempt 0, its
    /// failed deliveries are set `queued` again, and then the letter is removed.
    public static func replay(
        _ channel: Channel, amqpURL: String, database: DatabasePool, limit: Int, logger: Logger
    ) async throws -> ReplayReport {
        var report = ReplayReport()
        let connection = try await AMQPConnection.connect(url: amqpURL, logger: logger)
        do {
            try await read(channel, connection: connection, limit: limit) { delivery in
                guard var job = letter(delivery).job else {
                    report.undecodable += 1
                    return
                }
                let ids = job.recipients.compactMap(\.deliveryID)
                if !ids.isEmpty {
                    try await database.query(
                        """
                        UPDATE deliveries SET state = 'queued', last_error = NULL, failure_kind = NULL, failure_code = NULL,
                               updated_at = now()
                         WHERE id = ANY(\(ids)::bigint[]) AND state = 'failed'
                        """
                    )
                }
                job.id = UUID().uuidString.lowercased()
                job.attempt = 0
                job.lastError = nil
                let (message, routingKey) = BanditoreTopology.delivery(job)
                try await connection.publishConfirmed(
                    message, exchange: BanditoreTopology.deliveriesExchange, routingKey: routingKey
                )
                delivery.ack()
                report.replayed += 1
                report.recipients += job.recipients.count
            }
        } catch {
            await connection.close()
            throw error
        }
        await connection.close()
        return report
    }

    /// Hands `body` each letter that was in the queue when called (at most `limit`).
    private static func read(
        _ channel: Channel, connection: AMQPConnection, limit: Int, _ body: (AMQPDelivery) async throws -> Void
    ) async throws {
        let name = queue(channel)
        let count = min(try await connection.inspectQueue(name).messageCount, max(limit, 0))
        guard count > 0 else { return }
        let consumer = try await connection.consume(queue: name, prefetch: UInt16(clamping: min(count, 1000)))
        var seen = 0
        for try await delivery in consumer {
            try await body(delivery)
            seen += 1
            if seen >= count { break }
        }
        consumer.cancel()
    }

    private static func letter(_ delivery: AMQPDelivery) -> Letter {
        Letter(
            messageID: delivery.properties.messageID,
            job: try? DeliveryJob(json: delivery.body),
            bodyBytes: delivery.body.count
        )
    }
}
