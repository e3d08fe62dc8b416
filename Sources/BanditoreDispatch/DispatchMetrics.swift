import BanditoreChannels
import BanditoreCore
import Metrics

/// What an operator scales and alerts on, per channel: sends, failures by kind, retries, throttles, rate-limit
/// waits, sends in flight. Created once, with fixed dimensions.
struct DispatchMetrics: Sendable {
    let sent: Counter
    let failed: [String: Counter]
    let retried: Counter
    let deadLettered: Counter
    let throttled: Counter
    let skipped: Counter
    let unreachable: Counter
    let poison: Counter
    let jobs: Counter
    let rateLimitWait: Timer
    let sendLatency: Timer
    let inFlight: Gauge
    let statusesWritten: Counter
    /// Sends that found their address claimed by another replica and waited for its pace.
    let paceWaits: Counter

    init(channel: Channel) {
        let dimensions = [("channel", channel.rawValue)]
        sent = Counter(label: "banditore_dispatch_sent_total", dimensions: dimensions)
        var failed: [String: Counter] = [:]
        for kind in ["transient", "unknown", "rate_limited", "auth", "permanent"] {
            failed[kind] = Counter(label: "banditore_dispatch_failed_total", dimensions: dimensions + [("kind", kind)])
        }
        self.failed = failed
        retried = Counter(label: "banditore_dispatch_retries_total", dimensions: dimensions)
        deadLettered = Counter(label: "banditore_dispatch_dead_lettered_total", dimensions: dimensions)
        throttled = Counter(label: "banditore_dispatch_throttled_total", dimensions: dimensions)
        skipped = Counter(label: "banditore_dispatch_skipped_total", dimensions: dimensions)
        unreachable = Counter(label: "banditore_dispatch_unreachable_total", dimensions: dimensions)
        poison = Counter(label: "banditore_dispatch_poison_jobs_total", dimensions: dimensions)
        jobs = Counter(label: "banditore_dispatch_jobs_total", dimensions: dimensions)
        rateLimitWait = Timer(
            label: "banditore_dispatch_rate_limit_wait_seconds", dimensions: dimensions, preferredDisplayUnit: .seconds)
        sendLatency = Timer(
            label: "banditore_dispatch_send_seconds", dimensions: dimensions, preferredDisplayUnit: .seconds)
        inFlight = Gauge(label: "banditore_dispatch_in_flight", dimensions: dimensions)
        statusesWritten = Counter(label: "banditore_dispatch_statuses_written_total", dimensions: dimensions)
        paceWaits = Counter(label: "banditore_dispatch_pace_waits_total", dimensions: dimensions)
    }

    func failed(_ failure: ProviderFailure) {
        failed[failure.kind]?.increment()
        switch failure {
        case .rateLimited, .channelThrottled: throttled.increment()
        default: break
        }
    }
}
