import BanditoreCore
import Testing

@testable import BanditoreRegistry

/// The registry's rules alone, without a database: a command and the citizen it finds give the change and the reply.
@Suite struct CommandRulesTests {
    let catalogue = [
        TopicInfo(slug: "farmacie", names: [.italian: "Farmacie di turno", .english: "Pharmacies"]),
        TopicInfo(slug: "scuola", names: [.italian: "Scuola", .english: "School"]),
    ]

    func command(
        _ kind: CitizenCommand.Kind, topic: String? = nil, language: Language? = nil, writtenIn: Language? = nil,
        reportedLanguage: Language? = nil, leaveReason: CitizenCommand.LeaveReason? = nil
    ) -> CitizenCommand {
        CitizenCommand(
            channel: .telegram, address: "42", kind: kind, topic: topic, language: language,
            reportedLanguage: reportedLanguage, writtenIn: writtenIn, leaveReason: leaveReason
        )
    }

    func citizen(active: Bool = true, language: Language = .italian, topics: Set<String> = ["farmacie", "scuola"])
        -> CitizenState
    {
        CitizenState(active: active, language: language, inactiveReason: active ? nil : "command", topics: topics)
    }

    func decide(_ command: CitizenCommand, _ found: CitizenState?) -> CommandDecision {
        CommandRules.decide(command, citizen: found, catalogue: catalogue)
    }

    @Test func aNewcomerIsCreatedWithEveryTopicInTheLanguageTheProviderReports() {
        let decision = decide(command(.subscribe, reportedLanguage: .chinese), nil)
        #expect(decision.create)
        #expect(decision.citizen == CitizenState(active: true, language: .chinese, topics: ["farmacie", "scuola"]))
        #expect(decision.reply == .subscribed(topics: catalogue))
        #expect(decision.language == .chinese)
    }

    @Test func aNewcomerWhoNamesATopicFollowsOnlyThatOne() {
        let decision = decide(command(.subscribe, topic: "scuola"), nil)
        #expect(decision.citizen?.topics == ["scuola"])
        #expect(decision.reply == .subscribed(topics: [catalogue[1]]))
        #expect(decision.language == .italian)
    }

    @Test func aFormerSubscriberComesBackWithTheirOldTopicsAndTheOneTheyName() {
        let decision = decide(command(.subscribe, topic: "scuola"), citizen(active: false, topics: ["farmacie"]))
        #expect(!decision.create)
        #expect(decision.citizen == CitizenState(active: true, language: .italian, topics: ["farmacie", "scuola"]))
        #expect(decision.follow == "scuola")
        #expect(decision.reply == .welcomeBack(topics: catalogue))
    }

    @Test func subscribingTwiceSaysSoAndChangesNothing() {
        let found = citizen()
        let decision = decide(command(.subscribe), found)
        #expect(decision.citizen == found)
        #expect(decision.follow == nil)
        #expect(decision.reply == .alreadySubscribed(topics: catalogue))
    }

    @Test func leavingRecordsWhyAndThoseWhoBlockedUsAreNotAnswered() {
        let left = decide(command(.unsubscribe), citizen())
        #expect(left.citizen?.active == false)
        #expect(left.citizen?.inactiveReason == "command")
        #expect(left.reply == .unsubscribed)
        let blocked = decide(command(.unsubscribe, leaveReason: .blocked), citizen())
        #expect(blocked.citizen?.inactiveReason == "blocked")
        #expect(blocked.reply == nil)
        #expect(decide(command(.unsubscribe), nil).reply == .notSubscribed)
        #expect(decide(command(.unsubscribe), citizen(active: false)).reply == .notSubscribed)
    }

    @Test func followingAndUnfollowingChangeOnlyWhatIsNotAlreadySo() {
        let follow = decide(command(.follow, topic: "scuola"), citizen(topics: ["farmacie"]))
        #expect(follow.follow == "scuola")
        #expect(follow.reply == .following(catalogue[1]))
        let again = decide(command(.follow, topic: "scuola"), citizen())
        #expect(again.follow == nil)
        #expect(again.reply == .alreadyFollowing(catalogue[1]))
        let unfollow = decide(command(.unfollow, topic: "farmacie"), citizen())
        #expect(unfollow.unfollow == "farmacie")
        #expect(unfollow.citizen?.topics == ["scuola"])
        #expect(unfollow.reply == .unfollowed(catalogue[0]))
        #expect(decide(command(.unfollow, topic: "farmacie"), citizen(topics: [])).reply == .notFollowing(catalogue[0]))
        #expect(decide(command(.follow, topic: "meteo"), citizen()).reply == .unknownTopic("meteo", all: catalogue))
        #expect(decide(command(.follow, topic: "scuola"), citizen(active: false)).reply == .notSubscribed)
    }

    @Test func writingInAnotherLanguageMovesTheCitizenToIt() {
        let decision = decide(command(.status, writtenIn: .english), citizen())
        #expect(decision.language == .english)
        #expect(decision.citizen?.language == .english)
        #expect(decision.reply == .status(active: true, topics: catalogue))
    }

    @Test func settingTheLanguageNeedsASubscriptionAndAKnownLanguage() {
        let set = decide(command(.setLanguage, language: .chinese, writtenIn: .italian), citizen())
        #expect(set.citizen?.language == .chinese)
        #expect(set.language == .chinese)
        #expect(set.reply == .languageSet)
        #expect(decide(command(.setLanguage), citizen()).reply == .unknownLanguage)
        #expect(decide(command(.setLanguage, language: .english), nil).reply == .notSubscribed)
        #expect(decide(command(.setLanguage, language: .english), citizen(active: false)).reply == .notSubscribed)
    }

    @Test func listsHelpAndTheUnknown() {
        #expect(
            decide(command(.listTopics), citizen(topics: ["scuola"])).reply
                == .topicList(all: catalogue, followed: ["scuola"]))
        #expect(decide(command(.listTopics), citizen(active: false)).reply == .topicList(all: catalogue, followed: []))
        #expect(decide(command(.status), nil).reply == .notSubscribed)
        #expect(decide(command(.help), nil).reply == .help)
        #expect(decide(command(.unknown), citizen()).reply == .notUnderstood)
    }
}
