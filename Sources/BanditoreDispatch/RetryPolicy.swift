import BanditoreCore
import BanditoreRuntime

/// Exponential backoff through the delay queues (`BanditoreTopology.retryDelays`: 1 s, 5 s, 30 s, 2 min, 10 min),
/// with jitter, and never sooner than the provider asked.
enum RetryPolicy {
    /// The delay step for a retry after `attempt` failed sends: one step further each time, or the first step long
    /// enough for the provider's hint.
    static func step(attempt: Int, hint: Duration?) -> Int {
        let delays = BanditoreTopology.retryDelays
        var step = min(max(attempt, 0), delays.count - 1)
        if let hint {
            let hintMilliseconds = hint.wholeMilliseconds
            while step < delays.count - 1, Int64(delays[step]) < hintMilliseconds { step += 1 }
        }
        return step
    }

    static func delayMilliseconds(step: Int) -> Int {
        BanditoreTopology.retryDelays[min(max(step, 0), BanditoreTopology.retryDelays.count - 1)]
    }

    /// The message's own expiry inside the step's queue: 80–100% of the step's delay, so that recipients who
    /// failed together do not all come back at the same instant, and never less than the provider's hint.
    static func jittered(_ milliseconds: Int, atLeast hint: Duration?) -> Int {
        let jittered = Int(Double(milliseconds) * Double.random(in: 0.8...1.0))
        guard let hint else { return jittered }
        let hintMilliseconds = Int(hint.wholeMilliseconds)
        return max(jittered, min(hintMilliseconds, milliseconds))
    }
}
