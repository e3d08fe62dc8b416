import DequeModule

/// Publisher confirms of one channel, apart from the socket: the publishes the broker has yet to confirm, the
/// barriers waiting for every publish before them, and what each waiter is told. It makes no C call and resumes
/// nothing itself: each step returns what to resume (``Resolution``) and how many publish slots to give back, so
/// that it is tested without a broker. `Waiter` is a continuation in the connection, anything in a test.
struct ConfirmTracker<Waiter> {
    /// A waiter to resume: with `error`, or successfully when it is nil.
    struct Resolution {
        var waiter: Waiter
        var error: AMQPError?
    }

    /// What a step leaves to do: the waiters to resume and the publish slots to release.
    struct Outcome {
        var resolutions: [Resolution] = []
        var released = 0
    }

    private struct Entry {
        var seq: UInt64
        var messageID: String?
        var waiter: Waiter?
        var returned: (code: Int, text: String)?
        var resolved = false
    }

    private var pending: Deque<Entry> = []
    /// The sequence number the broker gives the next publish on the channel.
    private(set) var nextSeq: UInt64 = 1
    /// Failures of publishes that had no waiter of their own, told to the next barrier.
    private var unreported = (nacked: 0, returned: 0, lost: 0, detail: "")
    private var barriers: [(target: UInt64, waiter: Waiter)] = []

    /// Publishes the broker has not confirmed yet.
    var unconfirmed: Int { pending.lazy.filter { !$0.resolved }.count }

    var isIdle: Bool { pending.isEmpty }

    /// The channel was (re)opened in confirm mode: numbering starts again at 1. Call after ``fail(with:)``.
    mutating func restart() { nextSeq = 1 }

    /// A publish was written to the channel.
    mutating func published(messageID: String?, waiter: Waiter?) {
        pending.append(Entry(seq: nextSeq, messageID: messageID, waiter: waiter))
        nextSeq += 1
    }

    /// A publish could not be written: its waiter learns `error`; without one, the next barrier does.
    mutating func notPublished(waiter: Waiter?, error: AMQPError) -> Outcome {
        var outcome = Outcome(released: 1)
        if let waiter {
            outcome.resolutions.append(Resolution(waiter: waiter, error: error))
        } else {
            unreported.lost += 1
        }
        return outcome
    }

    /// Waits for every publish made so far: resolved at once when none is unconfirmed.
    mutating func barrier(_ waiter: Waiter) -> Outcome {
        let target = nextSeq - 1
        if pending.first.map({ $0.seq > target }) ?? true {
            return Outcome(resolutions: [completion(of: waiter)])
        }
        barriers.append((target, waiter))
        return Outcome()
    }

    /// Resolves a barrier now, whatever is unconfirmed (the connection is going away).
    mutating func completeBarrier(_ waiter: Waiter) -> Outcome { Outcome(resolutions: [completion(of: waiter)]) }

    /// `basic.ack` (or `basic.nack`, `ack` false) for `tag`, or for every publish up to it when `multiple`.
    mutating func confirmed(tag: UInt64, multiple: Bool, ack: Bool) -> Outcome {
        var outcome = Outcome()
        if multiple {
            while let first = pending.first, first.seq <= tag {
                let entry = pending.removeFirst()
                if !entry.resolved {
                    resolve(entry, ack: ack, into: &outcome)
                    outcome.released += 1
                }
            }
        } else if let first = pending.first, tag >= first.seq {
            let index = Int(tag - first.seq)
            if index < pending.count, !pending[index].resolved {
                resolve(pending[index], ack: ack, into: &outcome)
                pending[index].resolved = true
                outcome.released += 1
            }
        }
        while let first = pending.first, first.resolved { pending.removeFirst() }
        completeBarriers(into: &outcome)
        return outcome
    }

    /// `basic.return` of a message: the oldest unresolved publish with its message id is marked returned, and its
    /// waiter learns it with the confirm that follows. False when no publish has that message id.
    mutating func returned(messageID: String?, code: Int, text: String) -> Bool {
        guard let index = pending.firstIndex(where: { !$0.resolved && $0.returned == nil && $0.messageID == messageID })
        else { return false }
        pending[index].returned = (code, text)
        return true
    }

    /// Every unconfirmed publish fails with `error` (the channel or the connection was lost); a closed channel
    /// counts as a nack for the barriers, anything else as lost.
    mutating func fail(with error: AMQPError) -> Outcome {
        var outcome = Outcome()
        while let entry = pending.popFirst() {
            guard !entry.resolved else { continue }
            outcome.released += 1
            if let waiter = entry.waiter {
                outcome.resolutions.append(Resolution(waiter: waiter, error: error))
            } else if error.code == .channelClosed {
                unreported.nacked += 1
                unreported.detail = error.detail ?? ""
            } else {
                unreported.lost += 1
            }
        }
        completeBarriers(into: &outcome)
        return outcome
    }

    /// Resolves every barrier still waiting (the connection is closing).
    mutating func completeAllBarriers() -> Outcome {
        var outcome = Outcome()
        for barrier in barriers { outcome.resolutions.append(completion(of: barrier.waiter)) }
        barriers.removeAll()
        return outcome
    }

    private mutating func completeBarriers(into outcome: inout Outcome) {
        guard !barriers.isEmpty else { return }
        let firstPending = pending.first?.seq ?? UInt64.max
        var remaining: [(target: UInt64, waiter: Waiter)] = []
        for barrier in barriers {
            if barrier.target < firstPending {
                outcome.resolutions.append(completion(of: barrier.waiter))
            } else {
                remaining.append(barrier)
            }
        }
        barriers = remaining
    }

    /// A barrier's result: the first kind of failure unreported since the last barrier, else success.
    private mutating func completion(of waiter: Waiter) -> Resolution {
        let failures = unreported
        unreported = (0, 0, 0, "")
        if failures.nacked > 0 {
            return Resolution(
                waiter: waiter, error: AMQPError(.nacked, detail: failures.detail, messageCount: failures.nacked))
        } else if failures.returned > 0 {
            return Resolution(
                waiter: waiter, error: AMQPError(.returned, detail: failures.detail, messageCount: failures.returned)
            )
        } else if failures.lost > 0 {
            return Resolution(waiter: waiter, error: AMQPError(.connectionLost, messageCount: failures.lost))
        }
        return Resolution(waiter: waiter, error: nil)
    }

    private mutating func resolve(_ entry: Entry, ack: Bool, into outcome: inout Outcome) {
        let error: AMQPError?
        if !ack {
            error = AMQPError(.nacked, detail: "the broker nacked the message", messageCount: 1)
            unreported.detail = "the broker nacked the message"
        } else if let returned = entry.returned {
            error = AMQPError(.returned, replyCode: returned.code, detail: returned.text, messageCount: 1)
            unreported.detail = "\(returned.code) \(returned.text)"
        } else {
            error = nil
        }
        if let waiter = entry.waiter {
            outcome.resolutions.append(Resolution(waiter: waiter, error: error))
        } else if let error {
            if error.code == .nacked { unreported.nacked += 1 } else { unreported.returned += 1 }
        }
    }
}
