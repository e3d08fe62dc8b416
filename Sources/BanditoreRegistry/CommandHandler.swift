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
    public func apply(batch commands: [CitizenCommand], on connection: DatabaseConnection) async throws -> [Outcome] {
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
    public func apply(_ command: CitizenCommand, on connection: DatabaseConnection) async throws -> Outcome {
        try await apply(batch: [command], on: connection)[0]
    }

    /// Writes the outcomes' pending replies to the outbox, in one statement.
    func addReplies(_ outcomes: inout [Outcome], on connection: DatabaseConnection) async throws {
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
        var subscriber: SubscriberRecord?
        /// Whether that row was created by the read-ahead itself (a new citizen subscribing).
        var created = false
    }

    /// Takes, for a batch of commands in three statements instead of three per command, what each one's
    /// ``apply(_:on:prefetched:)`` would do first: records the provider message ids (a retry's is found already
    /// there), loads and locks the citizens' rows, and creates the rows of new citizens who subscribe. Only a
    /// citizen's first command in the batch is taken (the later ones must see what the earlier ones did), and only
    /// the first command with a given provider id; the others are left to `apply`, which reads for itself. Keyed by
    /// index in `commands`.
    func prefetch(_ commands: [CitizenCommand], on connection: DatabaseConnection) async throws -> [Int: Prefetched] {
        func messageKey(_ channel: String, _ id: String) -> String { "\(channel)|\(id)" }
        var taken: [Int] = []
        var citizens = Set<String>()
        var keys = Set<String>()
        for (index, command) in commands.enumerated() {
            switch command.kind {
            case .ignored, .deliveryStatus: continue
            default: break
            }
            guard citizens.insert(Subscribers.key(command.channel, command.address)).inserted else { continue }
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
        let rows = try await Subscribers.load(
            taken.map { (commands[$0].channel, commands[$0].address) }, on: connection
        )
        var out: [Int: Prefetched] = [:]
        var newcomers: [CitizenCommand] = []
        for index in taken {
            let command = commands[index]
            let prefetched = Prefetched(
                fresh: command.dedupeKey.map { fresh.contains(messageKey(command.channel.rawValue, $0)) },
                subscriber: rows[Subscribers.key(command.channel, command.address)]
            )
            out[index] = prefetched
            if command.kind == .subscribe, prefetched.fresh != false, prefetched.subscriber == nil {
                newcomers.append(command)
            }
        }
        if !newcomers.isEmpty {
            let catalogue = try await topics.all(connection)
            let created = try await Subscribers.create(
                newcomers.map { Self.newcomer($0, catalogue: catalogue) }, on: connection
            )
            for index in taken {
                let command = commands[index]
                guard let row = created[Subscribers.key(command.channel, command.address)] else { continue }
                out[index]?.subscriber = row
                out[index]?.created = true
            }
        }
        return out
    }

    /// The row a new citizen's subscribe creates: every topic, or the one it names; the language it is written in
    /// or the provider reports, else Italian.
    static func newcomer(_ command: CitizenCommand, catalogue: [TopicInfo]) -> Subscribers.New {
        let decision = CommandRules.decide(command, citizen: nil, catalogue: catalogue)
        return Subscribers.New(
            channel: command.channel, address: command.address, language: decision.language,
            topics: (decision.citizen?.topics).map { Array($0).sorted() } ?? [], at: command.receivedAt
        )
    }

    /// Applies `command` on `connection`, inside the caller's transaction, its reply left pending
    /// (``addReplies(_:on:)``); `prefetched` is what ``prefetch(_:on:)`` took for it in the same transaction, if
    /// anything.
    func apply(_ command: CitizenCommand, on connection: DatabaseConnection, prefetched: Prefetched?) async throws
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
                fresh =
                    try await connection.query(
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
        var record: SubscriberRecord? =
            if let prefetched { prefetched.subscriber } else {
                try await Subscribers.load([(command.channel, command.address)], on: connection)[
                    Subscribers.key(command.channel, command.address)
                ]
            }
        // A row the batch's read-ahead created for this command is new to the rules.
        let createdAhead = prefetched?.created == true
        let found =
            createdAhead
            ? nil
            : record.map {
                CitizenState(
                    active: $0.active, language: $0.language, inactiveReason: $0.inactiveReason, topics: $0.topics)
            }
        let decision = CommandRules.decide(command, citizen: found, catalogue: catalogue)
        if decision.create {
            if record == nil {
                let new = Self.newcomer(command, catalogue: catalogue)
                record = try await Subscribers.create([new], on: connection)[
                    Subscribers.key(command.channel, command.address)
                ]
            }
        } else if var existing = record, let citizen = decision.citizen {
            if let topic = decision.follow { try await Subscribers.follow(topic, id: existing.id, on: connection) }
            if let topic = decision.unfollow { try await Subscribers.unfollow(topic, id: existing.id, on: connection) }
            existing.active = citizen.active
            existing.language = citizen.language
            existing.inactiveReason = citizen.inactiveReason
            existing.topics = citizen.topics
            try await Subscribers.save(existing, lastInbound: command.receivedAt, on: connection)
            record = existing
        }
        let language = decision.language
        guard let reply = decision.reply else { return outcome }
        let job = DeliveryJob(
            id: "reply-\(command.id)", channel: command.channel,
            messages: [language: .text(ReplyText.render(reply, language: language, channel: command.channel))],
            recipients: [Recipient(subscriberID: record?.id, address: command.address, language: language)],
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
        _ command: CitizenCommand, on connection: DatabaseConnection
    ) async throws -> (channel: String, providerMessageID: String)? {
        guard let report = command.report else { return nil }
        let error = report.errorCode.map { "\($0) \(report.errorTitle ?? "")".trimmingCharacters(in: .whitespaces) }
        let kept = try await DeliveryReports.record(
            channel: command.channel.rawValue, providerMessageID: report.providerMessageID, status: report.status,
            error: error, on: connection
        )
        if report.status == "failed", let code = report.errorCode, Self.unreachableWhatsAppCodes.contains(code) {
            try await Subscribers.deactivate(
                channel: command.channel, address: command.address, reason: .unreachable, on: connection
            )
        }
        return kept ? (command.channel.rawValue, report.providerMessageID) : nil
    }

    /// WhatsApp codes that mean the number cannot be reached (not on WhatsApp, blocked us).
    static let unreachableWhatsAppCodes: Set<Int> = [131026]
}
