/// A token bucket: `rate` tokens a second up to `burst`. Times are seconds on the simulator's monotonic clock.
struct TokenBucket: Sendable {
    private(set) var tokens: Double
    private var updated: Double

    init(burst: Double, now: Double) {
        tokens = burst
        updated = now
    }

    /// Takes one token; returns nil when taken, or the seconds until one is available.
    mutating func take(rate: Double, burst: Double, now: Double) -> Double? {
        refill(rate: rate, burst: burst, now: now)
        if tokens >= 1 {
            tokens -= 1
            return nil
        }
        return (1 - tokens) / rate
    }

    /// Whether the bucket would be full at `now` (so forgetting it changes nothing).
    func isFull(rate: Double, burst: Double, now: Double) -> Bool {
        tokens + (now - updated) * rate >= burst
    }

    private mutating func refill(rate: Double, burst: Double, now: Double) {
        if now > updated {
            tokens = min(burst, tokens + (now - updated) * rate)
            updated = now
        }
    }
}

/// Token buckets by key (a recipient, a chat), forgetting the full ones when there are many.
struct KeyedBuckets: Sendable {
    private var buckets: [String: TokenBucket] = [:]
    private var pruneAt = 100_000

    mutating func take(_ key: String, rate: Double, burst: Double, now: Double) -> Double? {
        if buckets.count >= pruneAt {
            buckets = buckets.filter { !$0.value.isFull(rate: rate, burst: burst, now: now) }
            pruneAt = max(100_000, buckets.count * 2)
        }
        return buckets[key, default: TokenBucket(burst: burst, now: now)].take(rate: rate, burst: burst, now: now)
    }

    mutating func removeAll() {
        buckets = [:]
    }
}
