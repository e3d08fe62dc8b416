import AsyncHTTPClient
import BanditoreChannels
import BanditoreCore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

import struct NIOCore.ByteBuffer
import struct NIOCore.TimeAmount

/// Sends WhatsApp message statuses (`sent`, `delivered`, `failed`) to ingest's `/webhooks/whatsapp`, signed with
/// the app secret, in batches every 50 ms, each retried up to three times, as the Cloud API reports them after
/// a send was accepted.
public final class StatusWebhookSender: Sendable {
    struct Status: Sendable {
        var messageID: String
        var status: String
        var recipient: String
        var errorCode: Int?
        var errorTitle: String?
        var errorDetails: String?
        var timestamp = Int(Date().timeIntervalSince1970)
    }

    /// What happened to the statuses so far.
    public struct Counts: Sendable, Codable, Hashable {
        public var sent = 0
        public var failed = 0
        public var dropped = 0
    }

    private let configuration: SimulatorConfiguration
    private let logger: Logger
    private let client: HTTPClient
    private let pending = Mutex<[Status]>([])
    private let counts = Mutex(Counts())
    private static let maxPending = 200_000
    private static let batchSize = 100

    init(configuration: SimulatorConfiguration, client: HTTPClient, logger: Logger) {
        self.configuration = configuration
        self.client = client
        self.logger = logger
    }

    public var currentCounts: Counts { counts.withLock { $0 } }

    func enqueue(_ status: Status) {
        guard configuration.statusWebhooks else { return }
        let dropped = pending.withLock { queue -> Bool in
            guard queue.count < Self.maxPending else { return true }
            queue.append(status)
            return false
        }
        if dropped { counts.withLock { $0.dropped += 1 } }
    }

    /// Sends what is pending every 50 ms until the task is cancelled or the service group shuts down.
    func run() async {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
            let batch = pending.withLock { queue -> [Status] in
                defer { queue.removeAll(keepingCapacity: true) }
                return queue
            }
            guard !batch.isEmpty else { continue }
            let chunks = stride(from: 0, to: batch.count, by: Self.batchSize).map {
                Array(batch[$0..<min($0 + Self.batchSize, batch.count)])
            }
            await withTaskGroup(of: Void.self) { group in
                var running = 0
                for chunk in chunks {
                    if running == 8 {
                        await group.next()
                        running -= 1
                    }
                    group.addTask { await self.post(chunk) }
                    running += 1
                }
            }
        }
    }

    private func post(_ statuses: [Status]) async {
        let body = Array(payload(statuses).utf8)
        var request = HTTPClientRequest(url: configuration.ingestURL + "/webhooks/whatsapp")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(
            name: "X-Hub-Signature-256",
            value: WhatsApp.signature(body: body, appSecret: configuration.whatsappAppSecret)
        )
        request.body = .bytes(ByteBuffer(bytes: body))
        for attempt in 1...3 {
            do {
                let response = try await client.execute(request, timeout: .seconds(5))
                _ = try? await response.body.collect(upTo: 1 << 16)
                if (200..<300).contains(response.status.code) {
                    counts.withLock { $0.sent += statuses.count }
                    return
                }
                logger.debug("status webhook refused", metadata: ["http.status": "\(response.status.code)"])
            } catch {
                logger.debug("status webhook failed", metadata: ["error": "\(error)"])
            }
            if attempt < 3 { try? await Task.sleep(for: .milliseconds(500 * attempt)) }
        }
        counts.withLock { $0.failed += statuses.count }
    }

    /// The Cloud API's webhook body for a batch of statuses.
    func payload(_ statuses: [Status]) -> String {
        let items = statuses.map { s -> String in
            var item =
                "{\"id\":\(JSONText.quote(s.messageID)),\"status\":\(JSONText.quote(s.status)),"
                + "\"timestamp\":\"\(s.timestamp)\",\"recipient_id\":\(JSONText.quote(s.recipient))"
            if let code = s.errorCode {
                let title = JSONText.quote(s.errorTitle ?? "")
                item +=
                    ",\"errors\":[{\"code\":\(code),\"title\":\(title),\"message\":\(title),"
                    + "\"error_data\":{\"details\":\(JSONText.quote(s.errorDetails ?? ""))}}]"
            } else if s.status != "failed" {
                item +=
                    ",\"conversation\":{\"id\":\"SIMCONV\",\"origin\":{\"type\":\"utility\"}},"
                    + "\"pricing\":{\"billable\":true,\"pricing_model\":\"CBP\",\"category\":\"utility\"}"
            }
            return item + "}"
        }
        return "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"
            + JSONText.quote(configuration.whatsappBusinessAccountID)
            + ",\"changes\":[{\"field\":\"messages\",\"value\":{\"messaging_product\":\"whatsapp\","
            + "\"metadata\":{\"display_phone_number\":\(JSONText.quote(configuration.whatsappDisplayPhoneNumber)),"
            + "\"phone_number_id\":\(JSONText.quote(configuration.whatsappPhoneNumberID))},"
            + "\"statuses\":[\(items.joined(separator: ","))]}}]}]}"
    }
}
