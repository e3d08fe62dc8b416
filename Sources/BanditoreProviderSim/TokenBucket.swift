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

/// SplitMix64: small, fast and seedable, for repeatable fault injection.
struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// True with probability `p`.
    mutating func chance(_ p: Double) -> Bool {
        p > 0 && Double.random(in: 0..<1, using: &self) < p
    }
}
