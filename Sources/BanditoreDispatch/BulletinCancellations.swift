import BanditorePostgres
import Foundation
import Synchronization

/// Whether a bulletin was cancelled, looked up in PostgreSQL at most every `refresh` per bulletin: a dispatcher asks
/// before each send, so that nothing of a bulletin goes out once its cancellation is confirmed (the admin API
/// answers a cancel only after a few such intervals). A database error counts as "not cancelled": the send goes on
/// as it would have without the check.
final class BulletinCancellations: Sendable {
    private struct Entry {
        var checked: ContinuousClock.Instant
        var cancelled: Bool
    }

    private let database: DatabasePool
    private let refresh: Duration
    private let cache = Mutex<[UUID: Entry]>([:])

    init(database: DatabasePool, refresh: Duration = .milliseconds(250)) {
        self.database = database
        self.refresh = refresh
    }

    func isCancelled(_ bulletin: UUID) async -> Bool {
        let now = ContinuousClock.now
        if let entry = cache.withLock({ $0[bulletin] }), entry.cancelled || now - entry.checked < refresh {
            return entry.cancelled
        }
        let cancelled =
            (try? await database.query("SELECT state = 'cancelled' FROM bulletins WHERE id = \(bulletin)").first?
                .decode(Bool.self, at: 0)) ?? false
        cache.withLock { cache in
            if cache.count > 1000 { cache.removeAll() }
            cache[bulletin] = Entry(checked: now, cancelled: cancelled)
        }
        return cancelled
    }
}
