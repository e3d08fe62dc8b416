import Testing

@testable import BanditoreAMQP

/// The publisher-confirm bookkeeping, without a broker: waiters are plain names.
@Suite struct ConfirmTrackerTests {
    typealias Tracker = ConfirmTracker<String>

    /// The waiters resolved, with the error code each got ("ok": success).
    private func results(_ outcome: Tracker.Outcome) -> [String: String] {
        Dictionary(uniqueKeysWithValues: outcome.resolutions.map { ($0.waiter, $0.error.map { "\($0.code)" } ?? "ok") })
    }

    @Test func singleAcksResolveTheirOwnPublishOutOfOrder() {
        var tracker = Tracker()
        tracker.published(messageID: "a", waiter: "a")
        tracker.published(messageID: "b", waiter: "b")
        tracker.published(messageID: "c", waiter: "c")
        let second = tracker.confirmed(tag: 2, multiple: false, ack: true)
        #expect(results(second) == ["b": "ok"])
        #expect(second.released == 1)
        #expect(tracker.unconfirmed == 2)
        // The same tag again is not resolved twice.
        #expect(tracker.confirmed(tag: 2, multiple: false, ack: true).resolutions.isEmpty)
        let first = tracker.confirmed(tag: 1, multiple: false, ack: false)
        #expect(results(first) == ["a": "nacked"])
        #expect(tracker.unconfirmed == 1)
        #expect(!tracker.isIdle)
    }

    @Test func aMultipleAckResolvesEverythingUpToItsTag() {
        var tracker = Tracker()
        for name in ["a", "b", "c", "d"] { tracker.published(messageID: name, waiter: name) }
        _ = tracker.confirmed(tag: 2, multiple: false, ack: true)
        let outcome = tracker.confirmed(tag: 3, multiple: true, ack: true)
        #expect(results(outcome) == ["a": "ok", "c": "ok"])
        #expect(outcome.released == 2)
        #expect(tracker.unconfirmed == 1)
    }

    @Test func aBarrierWaitsForEveryPublishBeforeItOnly() {
        var tracker = Tracker()
        #expect(results(tracker.barrier("empty")) == ["empty": "ok"])
        tracker.published(messageID: nil, waiter: nil)
        tracker.published(messageID: nil, waiter: nil)
        #expect(tracker.barrier("wall").resolutions.isEmpty)
        tracker.published(messageID: nil, waiter: nil)  // after the barrier: not waited for
        #expect(tracker.confirmed(tag: 1, multiple: false, ack: true).resolutions.isEmpty)
        #expect(results(tracker.confirmed(tag: 2, multiple: false, ack: true)) == ["wall": "ok"])
    }

    @Test func aBarrierReportsTheFailuresOfPublishesWithoutWaiters() {
        var tracker = Tracker()
        tracker.published(messageID: "x", waiter: nil)
        tracker.published(messageID: "y", waiter: nil)
        _ = tracker.barrier("wall")
        let outcome = tracker.confirmed(tag: 2, multiple: true, ack: false)
        #expect(outcome.resolutions.count == 1)
        #expect(outcome.resolutions[0].error?.code == .nacked)
        #expect(outcome.resolutions[0].error?.messageCount == 2)
        // Reported once: the next barrier is clean.
        #expect(results(tracker.barrier("next")) == ["next": "ok"])
    }

    @Test func aReturnedMessageFailsWithTheConfirmThatFollows() {
        var tracker = Tracker()
        tracker.published(messageID: "same", waiter: "first")
        tracker.published(messageID: "same", waiter: "second")
        let known = tracker.returned(messageID: "same", code: 312, text: "NO_ROUTE")
        let unknown = tracker.returned(messageID: "other", code: 312, text: "NO_ROUTE")
        #expect(known)
        #expect(!unknown)
        let outcome = tracker.confirmed(tag: 2, multiple: true, ack: true)
        #expect(results(outcome) == ["first": "returned", "second": "ok"])
        #expect(outcome.resolutions.first { $0.waiter == "first" }?.error?.replyCode == 312)
    }

    @Test func aLostConnectionFailsEveryUnconfirmedPublishAndFreesItsSlot() {
        var tracker = Tracker()
        tracker.published(messageID: nil, waiter: "a")
        tracker.published(messageID: nil, waiter: nil)
        tracker.published(messageID: nil, waiter: "c")
        _ = tracker.confirmed(tag: 1, multiple: false, ack: true)
        _ = tracker.barrier("wall")
        let outcome = tracker.fail(with: AMQPError(.connectionLost))
        #expect(outcome.released == 2)
        #expect(results(outcome) == ["c": "connectionLost", "wall": "connectionLost"])
        #expect(tracker.isIdle)
        tracker.restart()
        #expect(tracker.nextSeq == 1)
    }

    @Test func aClosedChannelCountsAsANackForTheNextBarrier() {
        var tracker = Tracker()
        tracker.published(messageID: nil, waiter: nil)
        _ = tracker.fail(with: AMQPError(.channelClosed, replyCode: 404, detail: "NOT_FOUND"))
        let barrier = tracker.barrier("wall")
        #expect(barrier.resolutions.first?.error?.code == .nacked)
        #expect(barrier.resolutions.first?.error?.detail == "NOT_FOUND")
    }

    @Test func aPublishNotWrittenFailsItsWaiterOrTheNextBarrier() {
        var tracker = Tracker()
        let own = tracker.notPublished(waiter: "a", error: AMQPError(.notConnected))
        #expect(results(own) == ["a": "notConnected"])
        #expect(own.released == 1)
        _ = tracker.notPublished(waiter: nil, error: AMQPError(.notConnected))
        #expect(tracker.barrier("wall").resolutions.first?.error?.code == .connectionLost)
    }

    @Test func closingResolvesTheBarriersStillWaiting() {
        var tracker = Tracker()
        tracker.published(messageID: nil, waiter: nil)
        _ = tracker.barrier("one")
        _ = tracker.barrier("two")
        #expect(Set(tracker.completeAllBarriers().resolutions.map(\.waiter)) == ["one", "two"])
        #expect(tracker.completeAllBarriers().resolutions.isEmpty)
    }
}

/// Frames into messages, without a broker.
@Suite struct ContentAssemblerTests {
    typealias Assembler = ContentAssembler<String>

    private func body(_ assembler: inout Assembler, channel: Int, _ bytes: [UInt8]) -> Assembler.Content? {
        bytes.withUnsafeBytes { assembler.body(channel: channel, $0) }
    }

    @Test func aBodyInSeveralFramesIsOneMessage() throws {
        var assembler = Assembler()
        assembler.start("deliver 1", channel: 3)
        var properties = AMQPProperties(persistent: true)
        properties.messageID = "m1"
        #expect(assembler.header(channel: 3, bodySize: 5, properties: properties) == nil)
        #expect(body(&assembler, channel: 3, [1, 2]) == nil)
        let content = try #require(body(&assembler, channel: 3, [3, 4, 5]))
        #expect(content.method == "deliver 1")
        #expect(content.body == [1, 2, 3, 4, 5])
        #expect(content.properties.messageID == "m1")
        #expect(!assembler.isAssembling(channel: 3))
    }

    @Test func anEmptyBodyEndsWithTheHeader() throws {
        var assembler = Assembler()
        assembler.start("return", channel: 2)
        let header = assembler.header(channel: 2, bodySize: 0, properties: AMQPProperties(persistent: false))
        let content = try #require(header)
        #expect(content.body.isEmpty)
        #expect(content.method == "return")
    }

    @Test func channelsAreAssembledApartAndBeyondTheFirstSixtyFour() throws {
        var assembler = Assembler()
        assembler.start("a", channel: 3)
        assembler.start("b", channel: 200)
        _ = assembler.header(channel: 3, bodySize: 2, properties: AMQPProperties(persistent: false))
        _ = assembler.header(channel: 200, bodySize: 1, properties: AMQPProperties(persistent: false))
        #expect(body(&assembler, channel: 3, [7]) == nil)
        #expect(try #require(body(&assembler, channel: 200, [9])).body == [9])
        #expect(try #require(body(&assembler, channel: 3, [8])).body == [7, 8])
    }

    @Test func framesOfNoMessageAndOfAClosedChannelAreIgnored() {
        var assembler = Assembler()
        #expect(assembler.header(channel: 5, bodySize: 0, properties: AMQPProperties(persistent: false)) == nil)
        #expect(body(&assembler, channel: 500, [1]) == nil)
        assembler.start("a", channel: 5)
        _ = assembler.header(channel: 5, bodySize: 3, properties: AMQPProperties(persistent: false))
        assembler.discard(channel: 5)
        #expect(body(&assembler, channel: 5, [1, 2, 3]) == nil)
        assembler.start("b", channel: 6)
        assembler.reset()
        #expect(!assembler.isAssembling(channel: 6))
    }

    @Test func aNewMethodDropsTheMessageLeftUnfinished() throws {
        var assembler = Assembler()
        assembler.start("old", channel: 4)
        _ = assembler.header(channel: 4, bodySize: 10, properties: AMQPProperties(persistent: false))
        assembler.start("new", channel: 4)
        _ = assembler.header(channel: 4, bodySize: 1, properties: AMQPProperties(persistent: false))
        let content = try #require(body(&assembler, channel: 4, [42]))
        #expect(content.method == "new")
        #expect(content.body == [42])
    }
}
