import BanditoreAMQP
import BanditoreCore
import BanditoreRuntime
import Foundation
import Testing

@testable import BanditoreDispatch

@Suite("Dispatch rules: retry steps, unreachable codes, jobs on the wire, pacing")
struct DispatchLogicTests {
    @Test("backoff goes one step further per attempt and stops at the last step")
    func steps() {
        #expect((0..<8).map { RetryPolicy.step(attempt: $0, hint: nil) } == [0, 1, 2, 3, 4, 4, 4, 4])
        #expect(RetryPolicy.delayMilliseconds(step: 0) == 1_000)
        #expect(RetryPolicy.delayMilliseconds(step: 4) == 600_000)
    }

    @Test("a provider's hint picks the first step that waits at least as long")
    func hints() {
        #expect(RetryPolicy.step(attempt: 0, hint: .seconds(6)) == 2)  // 1 s, 5 s are too short: 30 s
        #expect(RetryPolicy.step(attempt: 0, hint: .seconds(5)) == 1)
        #expect(RetryPolicy.step(attempt: 3, hint: .seconds(1)) == 3)  // never earlier than the backoff
        #expect(RetryPolicy.step(attempt: 0, hint: .seconds(3600)) == 4)
    }

    @Test("jitter stays within 80–100% of the delay and never under the hint")
    func jitter() {
        for _ in 0..<1000 {
            let value = RetryPolicy.jittered(30_000, atLeast: nil)
            #expect((24_000...30_000).contains(value))
            #expect(RetryPolicy.jittered(5_000, atLeast: .seconds(5)) == 5_000)
        }
        let values = Set((0..<100).map { _ in RetryPolicy.jittered(30_000, atLeast: nil) })
        #expect(values.count > 50, "spread, not one instant")
    }

    @Test("which permanent failures deactivate an address, per channel")
    func unreachable() {
        #expect(UnreachableRecipient.isGone(channel: .whatsapp, code: "131026", reason: "undeliverable"))
        #expect(!UnreachableRecipient.isGone(channel: .whatsapp, code: "131047", reason: "window closed"))
        #expect(!UnreachableRecipient.isGone(channel: .whatsapp, code: "132001", reason: "template does not exist"))
        #expect(
            UnreachableRecipient.isGone(
                channel: .telegram, code: "403", reason: "Forbidden: bot was blocked by the user"))
        #expect(UnreachableRecipient.isGone(channel: .telegram, code: "400", reason: "Bad Request: chat not found"))
        #expect(
            !UnreachableRecipient.isGone(channel: .telegram, code: "400", reason: "Bad Request: message is too long"))
        #expect(UnreachableRecipient.isGone(channel: .wechat, code: "43004", reason: "require subscribe"))
        #expect(UnreachableRecipient.isGone(channel: .wechat, code: "40003", reason: "invalid openid"))
        #expect(!UnreachableRecipient.isGone(channel: .wechat, code: "40037", reason: "invalid template_id"))
        #expect(!UnreachableRecipient.isGone(channel: .wechat, code: "invalid-message", reason: "too long"))
    }

    @Test("a job's JSON: languages as keys, and it reads back the same")
    func jobJSON() throws {
        let job = DeliveryJob(
            bulletinID: UUID(), channel: .wechat, urgent: true,
            messages: [
                .italian: .wechatTemplate("TPL", fields: ["title": "Allerta", "content": "Chiuse le scuole"]),
                .chinese: .wechatTemplate("TPL", fields: ["title": "警报", "content": "学校关闭"]),
            ],
            recipients: [Recipient(deliveryID: 7, subscriberID: 3, address: "oABC", language: .chinese)],
            correlationID: "c-1"
        )
        let data = try JSONEncoder().encode(job)
        let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        let messages = object?["messages"] as? [String: Any]
        #expect(Set(messages?.keys.map { $0 } ?? []) == ["it", "zh"])
        #expect(try JSONDecoder().decode(DeliveryJob.self, from: data) == job)
        #expect(job.message(for: .chinese)?.fields?["title"] == "警报")
        #expect(job.message(for: .english)?.fields?["title"] == "Allerta", "missing language falls back to Italian")
        #expect(!job.isReply)
        #expect(DeliveryJob(channel: .telegram, messages: [.italian: .text("ok")], recipients: []).isReply)
    }

    @Test("addresses are masked in logs")
    func masking() {
        #expect(Mask.address("393471234567") == "********567")
        #expect(Mask.address("12") == "***")
    }

    @Test(
        "per-recipient pacing: the same address waits its interval and margin from the start of its last send, others do not"
    )
    func pacing() async throws {
        let pacer = RecipientPacer(interval: .milliseconds(300), margin: .milliseconds(50))
        let clock = ContinuousClock()
        let start = clock.now
        try await pacer.acquire("a")
        try await pacer.acquire("b")
        #expect(clock.now - start < .milliseconds(250))
        // The send to "a" starts late (its wait for the rate limit): the pace counts from the send.
        try await Task.sleep(for: .milliseconds(200))
        let sentA = clock.now
        pacer.sent("a")
        pacer.sent("b")
        try await pacer.acquire("a")
        #expect(clock.now - sentA >= .milliseconds(350), "\(clock.now - sentA)")
        pacer.release("a")
        // Released without a send: the pace still counts from the last send.
        try await pacer.acquire("a")
        #expect(clock.now - sentA >= .milliseconds(350))
        pacer.sent("a")
    }

    @Test("per-recipient pacing: a second send to an address held by a first waits for it, then for the pace")
    func pacingSerialises() async throws {
        let pacer = RecipientPacer(interval: .milliseconds(200), margin: .zero)
        let clock = ContinuousClock()
        try await pacer.acquire("a")
        let second = Task {
            try await pacer.acquire("a")
            return clock.now
        }
        try await Task.sleep(for: .milliseconds(100))  // the first send waits for its slot
        let sent = clock.now
        pacer.sent("a")
        let got = try await second.value
        #expect(got - sent >= .milliseconds(200), "\(got - sent)")
        pacer.sent("a")
        // No interval: nothing is held.
        let free = RecipientPacer(interval: .zero)
        for _ in 0..<3 { try await free.acquire("a") }
        #expect(!free.isActive)
    }

    @Test("the in-flight bound gives a free place to the highest rank waiting")
    func semaphoreRanks() async throws {
        let semaphore = AsyncSemaphore(limit: 1)
        try await semaphore.acquire()
        let order = Order()
        let normal = Task {
            try await semaphore.acquire(rank: .normal)
            await order.add("normal")
            semaphore.release()
        }
        try await Task.sleep(for: .milliseconds(50))
        let reply = Task {
            try await semaphore.acquire(rank: .reply)
            await order.add("reply")
            semaphore.release()
        }
        try await Task.sleep(for: .milliseconds(50))
        let urgent = Task {
            try await semaphore.acquire(rank: .urgent)
            await order.add("urgent")
            semaphore.release()
        }
        try await Task.sleep(for: .milliseconds(50))
        semaphore.release()
        _ = try await (normal.value, reply.value, urgent.value)
        #expect(await order.items == ["urgent", "reply", "normal"])
    }

    @Test("the in-flight bound: a waiter cancelled leaves the queue at once, and the place goes to the next")
    func semaphoreCancellation() async throws {
        let semaphore = AsyncSemaphore(limit: 1)
        try await semaphore.acquire()
        let cancelled = Task { try await semaphore.acquire(rank: .urgent) }
        let next = Task {
            try await Task.sleep(for: .milliseconds(30))
            try await semaphore.acquire(rank: .normal)
            return "acquired"
        }
        try await Task.sleep(for: .milliseconds(10))
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        semaphore.release()
        #expect(try await next.value == "acquired")
        // Cancelled before it asks: it does not wait at all, and takes nothing.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await semaphore.acquire()
        }
        await #expect(throws: CancellationError.self) { try await early.value }
        semaphore.release()
        try await semaphore.acquire()  // the one place is free again
    }

    actor Order {
        var items: [String] = []
        func add(_ item: String) { items.append(item) }
    }

    @Test("a job's rank: urgent bulletins, replies, normal bulletins; each rank its own queue and routing")
    func ranks() {
        let message = RenderedMessage.text("x")
        let reply = DeliveryJob(channel: .telegram, messages: [.italian: message], recipients: [])
        let urgent = DeliveryJob(
            bulletinID: UUID(), channel: .telegram, urgent: true, messages: [.italian: message], recipients: [])
        let normal = DeliveryJob(bulletinID: UUID(), channel: .telegram, messages: [.italian: message], recipients: [])
        #expect([urgent.rank, reply.rank, normal.rank] == [.urgent, .reply, .normal])
        #expect(DeliveryRank.allCases.sorted() == [.urgent, .reply, .normal])
        #expect(BanditoreTopology.delivery(urgent).routingKey == "telegram.urgent")
        #expect(BanditoreTopology.delivery(reply).routingKey == "telegram.replies")
        #expect(BanditoreTopology.delivery(normal).routingKey == "telegram")
        #expect(BanditoreTopology.delivery(urgent).message.properties.priority == BanditoreTopology.maxPriority)
        let topology = BanditoreTopology.all
        for rank in DeliveryRank.allCases {
            let queue = BanditoreTopology.dispatchQueue(.telegram, rank)
            #expect(
                topology.bindings.contains {
                    $0.queue == queue && $0.routingKey == BanditoreTopology.deliveryRoutingKey(.telegram, rank)
                })
            // Each rank's retries come back to its own queue.
            let retry = BanditoreTopology.retryQueue(.telegram, rank, step: 2)
            #expect(
                topology.queues.first { $0.name == retry }?.deadLetterRoutingKey
                    == BanditoreTopology.deliveryRoutingKey(.telegram, rank))
        }
        #expect(topology.queues.first { $0.name == "dispatch.telegram.urgent" }?.type == .quorum)
        #expect(
            topology.queues.first { $0.name == "dispatch.telegram.urgent" }?.deadLetterRoutingKey == "dispatch.telegram"
        )
        #expect(BanditoreTopology.retryQueue(.telegram, step: 1) == "dispatch.telegram.retry.1")
    }

    @Test("only WeChat's template sends with a delivery's key can be dropped as repeats; the key is the delivery's")
    func repeats() {
        let options = SendOptions(idempotencyKey: SendOptions.idempotencyKey(deliveryID: 42))
        #expect(options.idempotencyKey == "banditore-d42")
        let template = RenderedMessage.wechatTemplate("t", fields: ["a": "b"])
        #expect(Dispatcher.providerDropsRepeat(channel: .wechat, message: template, options: options))
        #expect(!Dispatcher.providerDropsRepeat(channel: .wechat, message: template, options: SendOptions()))
        #expect(!Dispatcher.providerDropsRepeat(channel: .wechat, message: .text("x"), options: options))
        #expect(!Dispatcher.providerDropsRepeat(channel: .telegram, message: .text("x"), options: options))
    }

    @Test("the in-flight bound: no more than the limit hold a permit at once")
    func semaphore() async {
        let semaphore = AsyncSemaphore(limit: 3)
        let counter = Counter()
        await withTaskGroup { group in
            for _ in 0..<30 {
                group.addTask {
                    try? await semaphore.acquire()
                    await counter.enter()
                    try? await Task.sleep(for: .milliseconds(5))
                    await counter.leave()
                    semaphore.release()
                }
            }
        }
        #expect(await counter.peak == 3)
        #expect(await counter.current == 0)
    }

    actor Counter {
        var current = 0
        var peak = 0
        func enter() {
            current += 1
            peak = max(peak, current)
        }
        func leave() { current -= 1 }
    }
}
