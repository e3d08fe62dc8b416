import BanditorePostgres

/// Providers' reports on sent messages: a delivery moves forward (`sent` → `delivered` → `read`; `failed` only
/// before `delivered`), never back. A report that finds no delivery yet is kept in `delivery_reports` and applied
/// when the send is recorded.
public enum DeliveryReports {
    /// The order of states; a report applies only to a delivery of a lower rank.
    public static func rank(_ status: String) -> Int? {
        switch status {
        case "sent": 1
        case "delivered", "failed": 2
        case "read": 3
        default: nil
        }
    }

    static let currentRank =
        "(CASE d.state WHEN 'queued' THEN 0 WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3 ELSE 9 END)"

    /// Applies a report to its delivery, or keeps it for later when no delivery has that provider id yet; returns
    /// true when it was kept.
    ///
    /// A report kept while a dispatcher is committing the send can miss that dispatcher's ``applyKept(channel:providerMessageIDs:on:)``
    /// (neither transaction sees the other's row): the caller runs it again
    /// once its own transaction has committed, which then sees the send or is seen by the dispatcher.
    @discardableResult
    public static func record(
        channel: String, providerMessageID: String, status: String, error: String?, on connection: PostgresConnection
    ) async throws -> Bool {
        guard let rank = rank(status) else { return false }
        // One statement, so one snapshot: either the delivery with this provider id is there (and moves forward,
        // or is already further on) or it is not and the report is kept. Two statements would let a send recorded
        // between them make the report look "already further on" and be dropped.
        let kept = try await connection.query(
            """
            WITH moved AS (
                UPDATE deliveries AS d SET state = \(status), last_error = coalesce(\(error), d.last_error), updated_at = now()
                WHERE d.channel = \(channel) AND d.provider_message_id = \(providerMessageID)
                  AND \(unescaped: currentRank) < \(rank)
                RETURNING d.id
            ), known AS (
                SELECT 1 FROM deliveries WHERE channel = \(channel) AND provider_message_id = \(providerMessageID)
            )
            INSERT INTO delivery_reports (channel, provider_message_id, status, rank, last_error)
            SELECT \(channel), \(providerMessageID), \(status), \(rank), \(error)
             WHERE NOT EXISTS (SELECT 1 FROM known) AND NOT EXISTS (SELECT 1 FROM moved)
            ON CONFLICT (channel, provider_message_id) DO UPDATE
               SET status = EXCLUDED.status, rank = EXCLUDED.rank, last_error = coalesce(EXCLUDED.last_error, delivery_reports.last_error)
             WHERE delivery_reports.rank < EXCLUDED.rank
            RETURNING 1
            """
        )
        return !kept.rows.isEmpty
    }

    /// Applies the kept reports of these provider messages to their deliveries, where their sends are recorded by
    /// now; returns how many deliveries moved. Starts from `delivery_reports`' key, so a batch without reports
    /// costs one index probe per id.
    @discardableResult
    public static func applyKept(
        channel: String, providerMessageIDs: [String], on connection: PostgresConnection
    ) async throws -> Int {
        guard !providerMessageIDs.isEmpty else { return 0 }
        return try await connection.query(
            """
            \(unescaped: applyKeptUpdate)
              AND r.channel = \(channel) AND r.provider_message_id = ANY(\(providerMessageIDs)::text[])
            """
        ).affectedRows
    }

    /// Applies every kept report of the last hour whose send is recorded by now (the registry's sweep).
    @discardableResult
    public static func applyKeptRecent(on connection: PostgresConnection) async throws -> Int {
        try await connection.query(
            "\(unescaped: applyKeptUpdate) AND r.received_at > now() - interval '1 hour'"
        ).affectedRows
    }

    static let applyKeptUpdate = """
            UPDATE deliveries AS d SET state = r.status, last_error = coalesce(r.last_error, d.last_error), updated_at = now()
            FROM delivery_reports AS r
            WHERE r.channel = d.channel AND r.provider_message_id = d.provider_message_id
              AND \(currentRank) < r.rank AND d.state <> 'queued'
            """

    /// Forgets reports older than two days.
    public static func prune(on connection: PostgresConnection) async throws {
        try await connection.query("DELETE FROM delivery_reports WHERE received_at < now() - interval '2 days'")
    }
}
