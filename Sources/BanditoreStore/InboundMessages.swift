import BanditoreCore
import BanditorePostgres

/// The providers' message ids of the webhooks the registry applied (`inbound_messages`), which make a provider's
/// retry of one message take effect once.
///
/// They are needed only as long as a provider may retry: Telegram keeps an undelivered update for 24 hours,
/// WeChat retries three times within 15 seconds, WhatsApp retries a webhook for up to 7 days. Older ids are
/// forgotten, so that the table does not grow with every message citizens ever sent.
public enum InboundMessages {
    /// Deletes the ids received longer than `retention` ago, in statements of at most `batch` rows; returns how
    /// many.
    @discardableResult
    public static func prune(
        olderThan retention: Duration, batch: Int = 5_000, on connection: DatabaseConnection
    ) async throws -> Int {
        let seconds = retention.inSeconds
        return try await deleteInBatches(of: batch) { batch in
            try await connection.query(
                """
                DELETE FROM inbound_messages WHERE (channel, provider_message_id) IN (
                    SELECT channel, provider_message_id FROM inbound_messages
                     WHERE received_at < now() - make_interval(secs => \(seconds)) LIMIT \(batch))
                """
            ).affectedRows
        }
    }
}
