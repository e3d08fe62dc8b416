import BanditoreAMQP
import BanditoreChannels
import BanditoreCore
import BanditorePostgres
import BanditoreRuntime
import BanditoreStore
import Foundation
import Logging

/// When bulletins go: scheduled into the service windows (or their `send_at`) on arrival, and fanned out by a loop
/// once their time has come.
extension Composer {
    /// Schedules the bulletin, or fans it out when its time has come.
    func accept(_ id: UUID, now: Date, logger: Logger) async throws {
        let due = try await database.withTransaction { connection -> Bool in
            guard let bulletin = try await Bulletins.load(id, on: connection, forUpdate: true) else {
                logger.warning("submitted bulletin not found")
                return false
            }
            guard bulletin.state == .submitted else { return bulletin.state == .sending }
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
    func scheduler() async {
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
}
