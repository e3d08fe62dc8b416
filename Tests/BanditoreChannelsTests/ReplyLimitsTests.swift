import BanditoreChannels
import Foundation
import Testing

@testable import BanditoreCore

@Suite("Replies within the channels' limits")
struct ReplyLimitsTests {
    @Test("every reply fits the channels' text limits in every language")
    func repliesFit() {
        let topics = (0..<6).map {
            TopicInfo(slug: "topic-\($0)", names: [.italian: String(repeating: "Nome ", count: 12), .chinese: "主题名称"])
        }
        let replies: [Reply] = [
            .subscribed(topics: topics), .welcomeBack(topics: topics), .topicList(all: topics, followed: ["topic-1"]),
            .unknownTopic("x", all: topics), .help, .notUnderstood, .status(active: true, topics: topics),
        ]
        for reply in replies {
            for language in Language.allCases {
                for channel in Channel.allCases {
                    let text = ReplyText.render(reply, language: language, channel: channel)
                    #expect(!text.isEmpty)
                    #expect(text.utf8.count <= WeChat.maxCustomTextBytes, "\(reply) \(language) \(channel)")
                }
            }
        }
        #expect(ReplyText.render(.languageSet, language: .chinese, channel: .wechat) == "已切换为中文。")
    }
}
