import BanditoreCore

/// The pure part of a fan-out's job batching: recipients gathered per channel into jobs of `chunk`, and the cursors
/// that say how far the fan-out may count as queued. ``add(_:channel:)`` hands back a job once one is full,
/// ``flush()`` the partial jobs; after the broker confirmed everything published, ``confirmed()`` moves
/// `confirmedCursor` to the last delivery flushed.
///
/// Cursors are delivery ids: everything up to `confirmedCursor` is in a job the broker confirmed, so a composer that
/// restarts publishes again only what comes after it.
struct JobChunks: Sendable {
    let chunk: Int
    private var pending: [Channel: [Recipient]] = [:]
    /// The highest delivery id added.
    private(set) var lastID: Int64
    /// The highest delivery id in a job published by the last flush.
    private(set) var flushedCursor: Int64
    /// Recipients added up to the last flush, and confirmed so far.
    private(set) var flushedCount = 0
    private(set) var confirmedCount = 0
    private(set) var confirmedCursor: Int64
    /// Recipients added since the last flush.
    private(set) var sinceFlush = 0

    /// Starts after `cursor`, the delivery id the bulletin's fan-out had reached.
    init(cursor: Int64, chunk: Int) {
        self.chunk = max(1, chunk)
        lastID = cursor
        flushedCursor = cursor
        confirmedCursor = cursor
    }

    /// Adds a recipient; returns the recipients of a job that is now full, to publish.
    mutating func add(_ recipient: Recipient, channel: Channel) -> [Recipient]? {
        pending[channel, default: []].append(recipient)
        lastID = max(lastID, recipient.deliveryID ?? lastID)
        sinceFlush += 1
        guard pending[channel]!.count >= chunk else { return nil }
        return pending.removeValue(forKey: channel)
    }

    /// The partial jobs, in channel order, to publish now: afterwards every recipient added is in a published job.
    mutating func flush() -> [(channel: Channel, recipients: [Recipient])] {
        let jobs = Channel.allCases.compactMap { channel in
            pending[channel].flatMap { $0.isEmpty ? nil : (channel, $0) }
        }
        pending.removeAll(keepingCapacity: true)
        flushedCursor = lastID
        flushedCount += sinceFlush
        sinceFlush = 0
        return jobs
    }

    /// Whether anything flushed is waiting for the broker's confirm.
    var awaitsConfirm: Bool { flushedCursor > confirmedCursor || flushedCount > confirmedCount }

    /// The broker confirmed every job published so far: what was flushed counts as queued.
    mutating func confirmed() {
        confirmedCursor = flushedCursor
        confirmedCount = flushedCount
    }
}
