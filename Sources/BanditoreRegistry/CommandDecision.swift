import BanditoreCore

/// A citizen as a command finds them: their row and the topics they follow.
struct CitizenState: Sendable, Hashable {
    var active: Bool
    var language: Language
    /// Why they left, while inactive (`command`, `blocked`, `unreachable`...).
    var inactiveReason: String?
    var topics: Set<String>
}

/// What a command does to a citizen and what they are answered: decided by ``CommandRules/decide(_:citizen:catalogue:)``
/// without the database, carried out by ``CommandHandler``.
struct CommandDecision: Sendable, Hashable {
    /// The citizen after the command; nil when there is still no row.
    var citizen: CitizenState?
    /// The row is new: created with `citizen`'s language and topics.
    var create = false
    /// A topic to follow or to stop following (its slug).
    var follow: String?
    var unfollow: String?
    /// The answer, in `language`; nil when the citizen cannot be written to (they blocked us) or nothing is said.
    var reply: Reply?
    var language: Language
}

/// The registry's rules: a citizen's command and what it finds (the citizen's row, the topics) give the change and
/// the reply. Pure, so that every rule is tested alone.
enum CommandRules {
    /// Decides a command (not a delivery report, nor an ignored update: those change no citizen).
    static func decide(_ command: CitizenCommand, citizen found: CitizenState?, catalogue: [TopicInfo])
        -> CommandDecision
    {
        var decision = CommandDecision(
            citizen: found, language: found?.language ?? command.writtenIn ?? command.reportedLanguage ?? .italian
        )
        // Written to in another language than theirs: they are answered, and written to from now on, in it.
        if var existing = found, let written = command.writtenIn, written != existing.language,
            command.kind != .setLanguage
        {
            existing.language = written
            decision.language = written
            decision.citizen = existing
        }
        func named(_ slugs: Set<String>) -> [TopicInfo] { catalogue.filter { slugs.contains($0.slug) } }

        switch command.kind {
        case .subscribe:
            if var existing = decision.citizen {
                let wasActive = existing.active
                existing.active = true
                existing.inactiveReason = nil
                if let topic = chosenTopic(command, catalogue: catalogue), existing.topics.insert(topic.slug).inserted {
                    decision.follow = topic.slug
                }
                decision.citizen = existing
                decision.reply =
                    wasActive
                    ? .alreadySubscribed(topics: named(existing.topics)) : .welcomeBack(topics: named(existing.topics))
            } else {
                let topics = chosenTopic(command, catalogue: catalogue).map { [$0.slug] } ?? catalogue.map(\.slug)
                decision.citizen = CitizenState(
                    active: true, language: decision.language, inactiveReason: nil, topics: Set(topics)
                )
                decision.create = true
                decision.reply = .subscribed(topics: named(Set(topics)))
            }
        case .unsubscribe:
            let reason = command.leaveReason ?? .command
            if var existing = decision.citizen, existing.active {
                existing.active = false
                existing.inactiveReason = reason.rawValue
                decision.citizen = existing
                decision.reply = .unsubscribed
            } else {
                decision.reply = .notSubscribed
            }
            // Someone who blocked the bot or unfollowed the account cannot be written to.
            if reason == .blocked || reason == .unfollowed { decision.reply = nil }
        case .follow, .unfollow:
            guard var existing = decision.citizen, existing.active else {
                decision.reply = .notSubscribed
                break
            }
            guard let words = command.topic, let topic = catalogue.first(where: { $0.matches(words) }) else {
                decision.reply = .unknownTopic(command.topic ?? "", all: catalogue)
                break
            }
            if command.kind == .follow {
                if existing.topics.insert(topic.slug).inserted {
                    decision.follow = topic.slug
                    decision.reply = .following(topic)
                } else {
                    decision.reply = .alreadyFollowing(topic)
                }
            } else {
                if existing.topics.remove(topic.slug) != nil {
                    decision.unfollow = topic.slug
                    decision.reply = .unfollowed(topic)
                } else {
                    decision.reply = .notFollowing(topic)
                }
            }
            decision.citizen = existing
        case .listTopics:
            let followed = decision.citizen.map { $0.active ? $0.topics : [] } ?? []
            decision.reply = .topicList(all: catalogue, followed: followed)
        case .setLanguage:
            guard let wanted = command.language else {
                decision.reply = .unknownLanguage
                break
            }
            decision.language = wanted
            if var existing = decision.citizen {
                existing.language = wanted
                decision.citizen = existing
                decision.reply = existing.active ? .languageSet : .notSubscribed
            } else {
                decision.reply = .notSubscribed
            }
        case .status:
            if let existing = decision.citizen, existing.active {
                decision.reply = .status(active: true, topics: named(existing.topics))
            } else {
                decision.reply = .notSubscribed
            }
        case .help:
            decision.reply = .help
        case .unknown:
            decision.reply = .notUnderstood
        case .deliveryStatus, .ignored:
            break
        }
        return decision
    }

    /// The topic a command names, if the catalogue has it.
    static func chosenTopic(_ command: CitizenCommand, catalogue: [TopicInfo]) -> TopicInfo? {
        command.topic.flatMap { words in catalogue.first { $0.matches(words) } }
    }
}
