import BanditoreAMQP
import BanditoreCore
import BanditorePostgres
import BanditoreRuntime
import BanditoreStore
import Foundation
import Logging
import Synchronization

/// Applies citizens' commands to PostgreSQL, a batch to a transaction, and writes their replies to the outbox in
/// the same transaction.
///
/// A command with a provider message id takes effect once: the id goes into `inbound_messages` first, and a
/// command whose id is already there (a provider's retry, a redelivery after a crash) changes nothing and is not
/// answered again. Subscribing creates the subscriber (every topic, or the one a Telegram `/start <topic>`
/// names; the language the provider reports, else Italian) or reactivates a former one with their old
/// preferences; leaving marks the row inactive with when and why, and keeps nothing else.
public struct CommandHandler: Sendable {
    /// What a command did.
    public struct Outcome: Sendable {
        /// Whose command it was (channel and address).
        public var citizen: String
        public var duplicate = false
        /// The reply, in the outbox: publish it once the transaction has committed.
        public var reply: OutboxMessage?
        /// The reply before it is written to the outbox (``addReplies(_:on:)``).
        var pendingReply: Outbox.Entry?
        /// A provider's report kept because its send was not recorded yet: apply it once the transaction has
        /// committed (``DeliveryReports/applyKept(channel:providerMessageIDs:on:)``).
        public var keptReport: (channel: String, providerMessageID: String)?
    }

    private let topics: TopicCatalogue

    public init(topics: TopicCatalogue) {
        self.topics = topics
    }

    /// Applies a batch of commands in order, inside the caller's transaction: reads ahead for all of them
    /// (``prefetch(_:on:)``), applies each, and writes their replies to the outbox in one statement. Returns an
    /// outcome per command, in order.
    public func apply(batch commands: [CitizenCommand], on connection: PostgresConnection) async throws -> [Outcome] {
        let prefetched = try await prefetch(commands, on: connection)
        var outcomes: [Outcome] = []
        outcomes.reserveCapacity(commands.count)
        for (index, command) in commands.enumerated() {
            outcomes.append(try await apply(command, on: connection, prefetched: prefetched[index]))
        }
        try await addReplies(&outcomes, on: connection)
        return outcomes
    }

    /// Applies one command, inside the caller's transaction, reply written.
    public func apply(_ command: CitizenCommand, on connection: PostgresConnection) async throws -> Outcome {
        try await apply(batch: [command], on: connection)[0]
    }

    /// Writes the outcomes' pending replies to the outbox, in one statement.
    func addReplies(_ outcomes: inout [Outcome], on connection: PostgresConnection) async throws {
        let pending = outcomes.indices.filter { outcomes[$0].pendingReply != nil }
        guard !pending.isEmpty else { return }
        let written = try await Outbox.add(pending.map { outcomes[$0].pendingReply! }, on: connection)
        for (index, message) in zip(pending, written) {
            outcomes[index].reply = message
            outcomes[index].pendingReply = nil
        }
    }

    /// What a batch's first look found for one of its commands (``prefetch(_:on:)``).
    struct Prefetched: Sendable {
        /// Whether its provider message id was new (nil: it has none).
        var fresh: Bool?
        /// Its citizen's row, locked; nil when there is none yet.
        var subscriber: Subscriber?
        /// Whether that row was created by the read-ahead itself (a new citizen subscribing).
        var created = false
    }

    /// Takes, for a batch of commands in three statements instead of three per command, what each one's
    /// ``apply(_:on:prefetched:)`` would do first: records the provider message ids (a retry's is found already
    /// there), loads and locks the citizens' rows, and creates the rows of new citizens who subscribe. Only a
    /// citizen's first command in the batch is taken (the later ones must see what the earlier ones did), and only
    /// the first command with a given provider id; the others are left to `apply`, which reads for itself. Keyed by
    /// index in `commands`.
    func prefetch(_ commands: [CitizenCommand], on connection: PostgresConnection) async throws -> [Int: Prefetched] {
        func messageKey(_ channel: String, _ id: String) -> String { "\(channel)|\(id)" }
        var taken: [Int] = []
        var citizens = Set<String>()
        var keys = Set<String>()
        for (index, command) in commands.enumerated() {
            switch command.kind {
            case .ignored, .deliveryStatus: continue
            default: break
            }
            guard citizens.insert(Subscriber.key(command.channel, command.address)).inserted else { continue }
            if let key = command.dedupeKey {
                guard keys.insert(messageKey(command.channel.rawValue, key)).inserted else { continue }
            }
            taken.append(index)
        }
        guard !taken.isEmpty else { return [:] }
        // Ids in key order, rows in id order, by every batch: two batches (of two replicas) that share some do
        // not each wait for the other's.
        let dedupe = taken.filter { commands[$0].dedupeKey != nil }
        var fresh = Set<String>()
        if !dedupe.isEmpty {
            let channels = dedupe.map { commands[$0].channel.rawValue }
            let ids = dedupe.map { commands[$0].dedupeKey ?? "" }
            for row in try await connection.query(
                """
                INSERT INTO inbound_messages (channel, provider_message_id)
                SELECT * FROM unnest(\(channels)::text[], \(ids)::text[]) ORDER BY 1, 2
                ON CONFLICT DO NOTHING
                RETURNING channel, provider_message_id
                """
            ).rows {
                let (channel, id) = try row.decode(String.self, String.self)
                fresh.insert(messageKey(channel, id))
            }
        }
        let rows = try await Subscriber.load(
            taken.map { (commands[$0].channel, commands[$0].address) }, on: connection
        )
        var out: [Int: Prefetched] = [:]
        var newcomers: [CitizenCommand] = []
        for index in taken {
            let command = commands[index]
            let prefetched = Prefetched(
                fresh: command.dedupeKey.map { fresh.contains(messageKey(command.channel.rawValue, $0)) },
                subscriber: rows[Subscriber.key(command.channel, command.address)]
            )
            out[index] = prefetched
            if command.kind == .subscribe, prefetched.fresh != false, prefetched.subscriber == nil {
                newcomers.append(command)
            }
        }
        if !newcomers.isEmpty {
            let catalogue = try await topics.all(connection)
            let created = try await Subscriber.create(
                newcomers.map { Self.newcomer($0, catalogue: catalogue) }, on: connection
            )
            for index in taken {
                let command = commands[index]
                guard let row = created[Subscriber.key(command.channel, command.address)] else { continue }
                out[index]?.subscriber = row
                out[index]?.created = true
            }
        }
        return out
    }

    /// The row a new citizen's subscribe creates: every topic, or the one it names; the language it is written in
    /// or the provider reports, else Italian.
    static func newcomer(_ command: CitizenCommand, catalogue: [TopicInfo]) -> Subscriber.New {
        Subscriber.New(
            channel: command.channel, address: command.address,
            language: command.writtenIn ?? command.reportedLanguage ?? .italian,
            topics: chosenTopic(command, catalogue: catalogue).map { [$0.slug] } ?? catalogue.map(\.slug),
            at: command.receivedAt
        )
    }

    /// The topic a command names, if the catalogue has it.
    static func chosenTopic(_ command: CitizenCommand, catalogue: [TopicInfo]) -> TopicInfo? {
        command.topic.flatMap { words in catalogue.first { $0.matches(words) } }
    }

    /// Applies `command` on `connection`, inside the caller's transaction, its reply left pending
    /// (``addReplies(_:on:)``); `prefetched` is what ``prefetch(_:on:)`` took for it in the same transaction, if
    /// anything.
    func apply(_ command: CitizenCommand, on connection: PostgresConnection, prefetched: Prefetched?) async throws
        -> Outcome
    {
        var outcome = Outcome(citizen: CitizenKey.of(channel: command.channel, address: command.address))
        switch command.kind {
        case .ignored:
            return outcome
        case .deliveryStatus:
            outcome.keptReport = try await applyReport(command, on: connection)
            return outcome
        default:
            break
        }
        if let key = command.dedupeKey {
            let fresh: Bool
            if let known = prefetched?.fresh {
                fresh = known
            } else {
                fresh = try await connection.query(
                    """
                    INSERT INTO inbound_messages (channel, provider_message_id) VALUES (\(command.channel.rawValue), \(key))
                    ON CONFLICT DO NOTHING
                    """
                ).affectedRows == 1
            }
            if !fresh {
                outcome.duplicate = true
                return outcome
            }
        }
        let catalogue = try await topics.all(connection)
        var subscriber: Subscriber? =
            if let prefetched { prefetched.subscriber } else {
                try await Subscriber.load(channel: command.channel, address: command.address, on: connection)
            }
        var language = subscriber?.language ?? command.writtenIn ?? command.reportedLanguage ?? .italian
        if var existing = subscriber, let written = command.writtenIn, written != existing.language,
            command.kind != .setLanguage
        {
            existing.language = written
            language = written
            subscriber = existing
        }
        var reply: Reply?
        var created = false

        switch command.kind {
        case .subscribe:
            if var existing = subscriber, prefetched?.created != true {
                let wasActive = existing.active
                existing.active = true
                subscriber = existing
                if let topic = Self.chosenTopic(command, catalogue: catalogue) {
                    _ = try await existing.follow(topic.slug, on: connection)
                }
                let followed = try await existing.topics(catalogue, on: connection)
                reply = wasActive ? .alreadySubscribed(topics: followed) : .welcomeBack(topics: followed)
            } else {
                // A new citizen: created here, unless the batch's read-ahead already did.
                let new = Self.newcomer(command, catalogue: catalogue)
                if subscriber == nil {
                    subscriber = try await Subscriber.create([new], on: connection)[
                        Subscriber.key(command.channel, command.address)
                    ]
                }
                created = true
                reply = .subscribed(topics: catalogue.filter { new.topics.contains($0.slug) })
            }
        case .unsubscribe:
            let reason = command.leaveReason ?? .command
            if var existing = subscriber, existing.active {
                existing.active = false
                existing.inactiveReason = reason.rawValue
                subscriber = existing
                reply = .unsubscribed
            } else {
                reply = .notSubscribed
            }
            // Someone who blocked the bot or unfollowed the account cannot be written to.
            if reason == .blocked || reason == .unfollowed { reply = nil }
        case .follow, .unfollow:
            guard let existing = subscriber, existing.active else {
                reply = .notSubscribed
                break
            }
            guard let words = command.topic, let topic = catalogue.first(where: { $0.matches(words) }) else {
                reply = .unknownTopic(command.topic ?? "", all: catalogue)
                break
            }
            if command.kind == .follow {
                reply = try await existing.follow(topic.slug, on: connection) ? .following(topic) : .alreadyFollowing(topic)
            } else {
                reply = try await existing.unfollow(topic.slug, on: connection) ? .unfollowed(topic) : .notFollowing(topic)
            }
        case .listTopics:
            var followed: [TopicInfo] = []
            if let existing = subscriber, existing.active {
                followed = try await existing.topics(catalogue, on: connection)
            }
            reply = .topicList(all: catalogue, followed: Set(followed.map(\.slug)))
        case .setLanguage:
            guard let wanted = command.language else {
                reply = .unknownLanguage
                break
            }
            language = wanted
            if var existing = subscriber {
                existing.language = wanted
                subscriber = existing
                reply = existing.active ? .languageSet : .notSubscribed
            } else {
                reply = .notSubscribed
            }
        case .status:
            if let existing = subscriber, existing.active {
                reply = .status(active: true, topics: try await existing.topics(catalogue, on: connection))
            } else {
                reply = .notSubscribed
            }
        case .help:
            reply = .help
        case .unknown:
            reply = .notUnderstood
        case .deliveryStatus, .ignored:
            break
        }
        // A subscriber created just now was written whole.
        if let subscriber, !created {
            try await subscriber.save(lastInbound: command.receivedAt, on: connection)
        }
        guard let reply else { return outcome }
        let job = DeliveryJob(
            id: "reply-\(command.id)", channel: command.channel,
            messages: [language: .text(ReplyText.render(reply, language: language, channel: command.channel))],
            recipients: [Recipient(subscriberID: subscriber?.id, address: command.address, language: language)],
            correlationID: command.correlationID
        )
        outcome.pendingReply = try Outbox.Entry(
            encoding: job, type: DeliveryJob.messageType, messageID: job.id,
            exchange: BanditoreTopology.deliveriesExchange,
            routingKey: BanditoreTopology.deliveryRoutingKey(command.channel, .reply)
        )
        return outcome
    }

    /// A provider's report on a sent message moves its delivery forward (`sent` → `delivered` → `read`; `failed`
    /// only before `delivered`), never back; an address refused for good is deactivated. Returns the report when
    /// it was kept for a send not recorded yet.
    private func applyReport(
        _ command: CitizenCommand, on connection: PostgresConnection
    ) async throws -> (channel: String, providerMessageID: String)? {
        guard let report = command.report else { return nil }
        let error = report.errorCode.map { "\($0) \(report.errorTitle ?? "")".trimmingCharacters(in: .whitespaces) }
        let kept = try await DeliveryReports.record(
            channel: command.channel.rawValue, providerMessageID: report.providerMessageID, status: report.status,
            error: error, on: connection
        )
        if report.status == "failed", let code = report.errorCode, Self.unreachableWhatsAppCodes.contains(code) {
            try await Subscriber.deactivate(
                channel: command.channel, address: command.address, reason: .unreachable, on: connection
            )
        }
        return kept ? (command.channel.rawValue, report.providerMessageID) : nil
    }

    /// WhatsApp codes that mean the number cannot be reached (not on WhatsApp, blocked us).
    static let unreachableWhatsAppCodes: Set<Int> = [131026]
}

/// The topics, read from the database and kept for a few seconds.
public final class TopicCatalogue: Sendable {
    private let cache = Mutex<(at: ContinuousClock.Instant, topics: [TopicInfo])?>(nil)
    private let lifetime: Duration

    public init(lifetime: Duration = .seconds(10)) {
        self.lifetime = lifetime
    }

    public func all(_ connection: PostgresConnection) async throws -> [TopicInfo] {
        if let cached = cache.withLock({ $0 }), ContinuousClock.now - cached.at < lifetime { return cached.topics }
        let topics = try await Topics.load(on: connection)
        cache.withLock { $0 = (ContinuousClock.now, topics) }
        return topics
    }
}

/// A subscriber row, locked for the command's transaction.
struct Subscriber: Sendable {
    var id: Int64
    var channel: Channel
    var address: String
    var language: Language
    var active: Bool
    var inactiveReason: String?

    static func load(channel: Channel, address: String, on connection: PostgresConnection) async throws -> Subscriber? {
        try await load([(channel, address)], on: connection)[key(channel, address)]
    }

    /// The rows of these citizens, locked in id order (as every caller locks them, so that two transactions that
    /// share some do not each wait for the other's), keyed by ``key(_:_:)``; a citizen without a row is absent.
    static func load(_ citizens: [(channel: Channel, address: String)], on connection: PostgresConnection)
        async throws -> [String: Subscriber]
    {
        var rows: [String: Subscriber] = [:]
        for row in try await connection.query(
            """
            SELECT id, channel, address, language, active, inactive_reason FROM subscribers
            WHERE (channel, address) IN (
                SELECT * FROM unnest(\(citizens.map(\.channel.rawValue))::text[], \(citizens.map(\.address))::text[]))
            ORDER BY id FOR UPDATE
            """
        ).rows {
            let (id, channel, address, language, active, reason) = try row.decode(
                Int64.self, String.self, String.self, String.self, Bool.self, String?.self
            )
            guard let channel = Channel(rawValue: channel) else { continue }
            rows[key(channel, address)] = Subscriber(
                id: id, channel: channel, address: address, language: Language(rawValue: language) ?? .italian,
                active: active, inactiveReason: reason
            )
        }
        return rows
    }

    /// A citizen's key in what ``load(_:on:)`` returns.
    static func key(_ channel: Channel, _ address: String) -> String {
        "\(channel.rawValue)|\(address)"
    }

    /// A row to create.
    struct New: Sendable {
        var channel: Channel
        var address: String
        var language: Language
        var topics: [String]
        var at: Date
    }

    /// Creates the rows and their topics in one statement, in (channel, address) order as every batch does, so
    /// that two transactions creating some of the same citizens do not each wait for the other's; keyed by
    /// ``key(_:_:)``. A citizen created meanwhile by another transaction is a unique violation, as for one row.
    static func create(_ new: [New], on connection: PostgresConnection) async throws -> [String: Subscriber] {
        let sorted = new.sorted { ($0.channel.rawValue, $0.address) < ($1.channel.rawValue, $1.address) }
        var topicOwners: [Int] = []
        var topicSlugs: [String] = []
        for (index, row) in sorted.enumerated() {
            topicOwners += Array(repeating: index + 1, count: row.topics.count)
            topicSlugs += row.topics
        }
        let rows = try await connection.query(
            """
            WITH input AS (
                SELECT * FROM unnest(\(sorted.map(\.channel.rawValue))::text[], \(sorted.map(\.address))::text[],
                                     \(sorted.map(\.language.rawValue))::text[], \(sorted.map(\.at))::timestamptz[])
                         WITH ORDINALITY AS i(channel, address, language, at, n)
            ), created AS (
                INSERT INTO subscribers (channel, address, language, last_inbound_at, subscribed_at)
                SELECT channel, address, language, at, now() FROM input ORDER BY n
                RETURNING id, channel, address
            ), followed AS (
                INSERT INTO subscriber_topics (subscriber_id, topic)
                SELECT created.id, t.topic
                  FROM unnest(\(topicOwners)::bigint[], \(topicSlugs)::text[]) AS t(n, topic)
                  JOIN input USING (n)
                  JOIN created ON created.channel = input.channel AND created.address = input.address
                ON CONFLICT DO NOTHING
            )
            SELECT id, channel, address FROM created
            """
        ).rows
        var out: [String: Subscriber] = [:]
        let byKey = Dictionary(sorted.map { (key($0.channel, $0.address), $0) }, uniquingKeysWith: { first, _ in first })
        for row in rows {
            let (id, channel, address) = try row.decode(Int64.self, String.self, String.self)
            guard let channel = Channel(rawValue: channel), let new = byKey[key(channel, address)] else { continue }
            out[key(channel, address)] = Subscriber(
                id: id, channel: channel, address: address, language: new.language, active: true
            )
        }
        return out
    }

    /// Writes language and state; leaving records when and why, coming back clears them.
    func save(lastInbound: Date, on connection: PostgresConnection) async throws {
        try await connection.query(
            """
            UPDATE subscribers SET
                language = \(language.rawValue),
                subscribed_at = CASE WHEN \(active) AND NOT active THEN now() ELSE subscribed_at END,
                unsubscribed_at = CASE WHEN \(active) THEN NULL WHEN active THEN now() ELSE unsubscribed_at END,
                inactive_reason = CASE WHEN \(active) THEN NULL ELSE \(inactiveReason) END,
                active = \(active),
                last_inbound_at = greatest(last_inbound_at, \(lastInbound)),
                updated_at = now()
            WHERE id = \(id)
            """
        )
    }

    /// True when it was not followed before.
    func follow(_ topic: String, on connection: PostgresConnection) async throws -> Bool {
        try await connection.query(
            "INSERT INTO subscriber_topics (subscriber_id, topic) VALUES (\(id), \(topic)) ON CONFLICT DO NOTHING"
        ).affectedRows == 1
    }

    /// True when it was followed.
    func unfollow(_ topic: String, on connection: PostgresConnection) async throws -> Bool {
        try await connection.query(
            "DELETE FROM subscriber_topics WHERE subscriber_id = \(id) AND topic = \(topic)"
        ).affectedRows == 1
    }

    func topics(_ catalogue: [TopicInfo], on connection: PostgresConnection) async throws -> [TopicInfo] {
        let slugs = Set(
            try await connection.query("SELECT topic FROM subscriber_topics WHERE subscriber_id = \(id)").rows.map {
                try $0.decode(String.self, at: 0)
            }
        )
        return catalogue.filter { slugs.contains($0.slug) }
    }

    /// Marks an address inactive (a provider refused it for good, or its owner left without a command).
    @discardableResult
    static func deactivate(channel: Channel, address: String, reason: CitizenCommand.LeaveReason,
                           on connection: PostgresConnection) async throws -> Bool {
        try await connection.query(
            """
            UPDATE subscribers SET active = false, unsubscribed_at = now(), inactive_reason = \(reason.rawValue),
                updated_at = now()
            WHERE channel = \(channel.rawValue) AND address = \(address) AND active
            """
        ).affectedRows > 0
    }
}
