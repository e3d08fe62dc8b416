import BanditoreCore
import BanditorePostgres
import BanditoreStore
import Synchronization

/// The topics, read from the database and kept for a few seconds.
public final class TopicCatalogue: Sendable {
    private let cache = Mutex<(at: ContinuousClock.Instant, topics: [TopicInfo])?>(nil)
    private let lifetime: Duration

    public init(lifetime: Duration = .seconds(10)) {
        self.lifetime = lifetime
    }

    public func all(_ connection: DatabaseConnection) async throws -> [TopicInfo] {
        if let cached = cache.withLock({ $0 }), ContinuousClock.now - cached.at < lifetime { return cached.topics }
        let topics = try await Topics.load(on: connection)
        cache.withLock { $0 = (ContinuousClock.now, topics) }
        return topics
    }
}
