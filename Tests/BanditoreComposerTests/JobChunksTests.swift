import BanditoreCore
import Testing

@testable import BanditoreComposer

/// The composer's batching of a fan-out, without a broker or a database.
@Suite("A fan-out's jobs and cursors")
struct JobChunksTests {
    private func recipient(_ id: Int64) -> Recipient {
        Recipient(deliveryID: id, subscriberID: id, address: "a\(id)")
    }

    @Test("jobs of `chunk` per channel as they fill; the partial ones at the flush, in channel order; none twice")
    func chunks() {
        var chunks = JobChunks(cursor: 100, chunk: 3)
        var jobs: [(Channel, [Int64])] = []
        for id in Int64(101)...108 {
            let channel: Channel = id % 2 == 0 ? .telegram : .whatsapp
            if let full = chunks.add(recipient(id), channel: channel) {
                jobs.append((channel, full.map { $0.deliveryID! }))
            }
        }
        #expect(jobs.map(\.0) == [.whatsapp, .telegram])
        #expect(jobs.map(\.1) == [[101, 103, 105], [102, 104, 106]])
        let rest = chunks.flush()
        #expect(rest.map(\.channel) == [.whatsapp, .telegram])
        #expect(rest.map { $0.recipients.map { $0.deliveryID! } } == [[107], [108]])
        #expect(chunks.flush().isEmpty, "a second flush publishes nothing")
        let all = (jobs.flatMap(\.1) + rest.flatMap { $0.recipients.map { $0.deliveryID! } }).sorted()
        #expect(all == Array(101...108))
    }

    @Test("the confirmed cursor moves only past what was flushed and then confirmed")
    func cursors() {
        var chunks = JobChunks(cursor: 0, chunk: 500)
        #expect(!chunks.awaitsConfirm)
        for id in Int64(1)...10 { _ = chunks.add(recipient(id), channel: .wechat) }
        // Added but not flushed: a restart would publish them again, so the cursor stays.
        #expect(!chunks.awaitsConfirm && chunks.confirmedCursor == 0 && chunks.sinceFlush == 10)
        _ = chunks.flush()
        #expect(chunks.awaitsConfirm && chunks.flushedCursor == 10 && chunks.confirmedCursor == 0)
        for id in Int64(11)...12 { _ = chunks.add(recipient(id), channel: .wechat) }
        chunks.confirmed()
        #expect(chunks.confirmedCursor == 10 && chunks.confirmedCount == 10, "not past what came after the flush")
        #expect(!chunks.awaitsConfirm)
        _ = chunks.flush()
        chunks.confirmed()
        #expect(chunks.confirmedCursor == 12 && chunks.confirmedCount == 12)
    }

    @Test("recipients without a delivery row (posts to public channels) count, and leave the cursor where it was")
    func withoutRows() {
        var chunks = JobChunks(cursor: 50, chunk: 2)
        _ = chunks.add(Recipient(address: "@comune"), channel: .telegram)
        _ = chunks.flush()
        #expect(chunks.awaitsConfirm, "a flushed post waits for its confirm")
        chunks.confirmed()
        #expect(chunks.confirmedCursor == 50 && chunks.confirmedCount == 1)
        #expect(JobChunks(cursor: 0, chunk: 0).chunk == 1)
    }
}
