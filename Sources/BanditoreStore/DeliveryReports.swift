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
        channel: String, providerMessageID: String, status: String, error: String?, on connection: DatabaseConnection
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
    /// now; returns how many deliveries moved. It starts from the reports kept for these ids, and looks each one's
    /// delivery up by its provider id behind a fence (`OFFSET 0`) the planner cannot see through: a dispatcher runs
    /// this after every status batch, and as a join the planner, on statistics of `deliveries` read before any send
    /// was recorded (the provider ids' index looks empty), walked every sent delivery of the channel each time
    /// (57 ms a batch at 40,000 deliveries, three times the status update itself).
    @discardableResult
    public static func applyKept(
        channel: String, providerMessageIDs: [String], on connection: DatabaseConnection
    ) async throws -> Int {
        guard !providerMessageIDs.isEmpty else { return 0 }
        return try await connection.query(
            """
            UPDATE deliveries AS d SET state = m.status, last_error = coalesce(m.last_error, d.last_error), updated_at = now()
              FROM (SELECT r.status, r.rank, r.last_error, x.id
                      FROM delivery_reports AS r,
                           LATERAL (SELECT id FROM deliveries
                                     WHERE channel = r.channel AND provider_message_id = r.provider_message_id
                                    OFFSET 0) AS x
                     WHERE r.channel = \(channel) AND r.provider_message_id = ANY(\(providerMessageIDs)::text[])) AS m
             WHERE d.id = m.id AND d.state <> 'queued' AND \(unescaped: currentRank) < m.rank
            """
        ).affectedRows
    }

    /// Applies every kept report of the last hour whose send is recorded by now (the registry's sweep), by
    /// ``applyKept(channel:providerMessageIDs:on:)`` over the reports' ids, a thousand at a time.
    @discardableResult
    public static func applyKeptRecent(on connection: DatabaseConnection) async throws -> Int {
        let rows = try await connection.query(
            "SELECT channel, provider_message_id FROM delivery_reports WHERE received_at > now() - interval '1 hour'"
        ).rows
        var byChannel: [String: [String]] = [:]
        for row in rows {
            let (channel, id) = try row.decode(String.self, String.self)
            byChannel[channel, default: []].append(id)
        }
        var moved = 0
        for (channel, ids) in byChannel {
            for start in stride(from: 0, to: ids.count, by: 1_000) {
                moved += try await applyKept(
                    channel: channel, providerMessageIDs: Array(ids[start..<min(start + 1_000, ids.count)]),
                    on: connection
                )
            }
        }
        return moved
    }

    /// Forgets reports older than two days.
    public static func prune(on connection: DatabaseConnection) async throws {
        try await connection.query("DELETE FROM delivery_reports WHERE received_at < now() - interval '2 days'")
    }
}
