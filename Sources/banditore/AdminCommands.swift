import ArgumentParser
import BanditoreCore
import BanditoreStore
import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Where the admin API is and the token to use.
struct APIOptions: ParsableArguments {
    @Option(help: "The admin API (default: $BANDITORE_API_URL, else http://127.0.0.1:8080).")
    var apiURL: String?

    @Option(help: "A bearer token of ADMIN_TOKENS (default: $BANDITORE_ADMIN_TOKEN).")
    var token: String?

    var base: String {
        let url = apiURL ?? ProcessInfo.processInfo.environment["BANDITORE_API_URL"] ?? "http://127.0.0.1:8080"
        return url.hasSuffix("/") ? String(url.dropLast()) : url
    }

    /// Calls the API; returns the status and body, or throws a clear error when it cannot be reached.
    func call(_ method: String, _ path: String, body: Data? = nil, headers: [String: String] = [:]) async throws
        -> (status: Int, body: Data)
    {
        guard let url = URL(string: base + path) else { throw ValidationError("bad API URL \(base)") }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.timeoutInterval = 30
        if let token = token ?? ProcessInfo.processInfo.environment["BANDITORE_ADMIN_TOKEN"] {
            request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        }
        if let body {
            request.httpBody = body
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        do {
            let (data, response) = try await URLSession.shared.data(for: request)
            return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
        } catch {
            throw CLIError("cannot reach the admin API at \(base): \(error.localizedDescription)")
        }
    }

    /// The body of a 2xx answer, else an error with the API's own message.
    func expectSuccess(_ answer: (status: Int, body: Data)) throws -> Data {
        guard (200..<300).contains(answer.status) else {
            let text = String(decoding: answer.body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw CLIError("the admin API answered \(answer.status): \(text)")
        }
        return answer.body
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// The names are the wire format's.
// swift-format-ignore: AlwaysUseLowerCamelCase
/// What `GET /v1/bulletins/{id}` answers.
struct BulletinStatus: Decodable {
    var id: String
    var title: String
    var state: String
    var urgency: String
    var scheduled_for: Date?
    var progress: [String: ChannelProgress]
    var channel_posts: [ChannelPostStatus]?

    var finished: Bool {
        (state == "sent" || state == "cancelled") && progress.values.allSatisfy { $0.queued == 0 }
            && (channel_posts ?? []).allSatisfy { $0.state != "queued" }
    }

    static func decode(_ data: Data) throws -> BulletinStatus {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(BulletinStatus.self, from: data)
    }

    /// One line per channel: a bar of what is done, and the counts.
    func render() -> String {
        var lines = ["\(id)  \(title)  [\(state)\(urgency == "urgent" ? ", urgent" : "")]"]
        if state == "scheduled", let at = scheduled_for {
            lines.append("  scheduled for \(ISO8601DateFormatter().string(from: at))")
        }
        for channel in progress.keys.sorted() {
            let p = progress[channel]!
            let done = p.audience - p.queued
            let width = 30
            let filled = p.audience == 0 ? (state == "sent" ? width : 0) : done * width / p.audience
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            let pad = channel.padding(toLength: 9, withPad: " ", startingAt: 0)
            lines.append(
                "  \(pad)[\(bar)] \(done)/\(p.audience)  sent \(p.sent + p.delivered + p.read)"
                    + " (delivered \(p.delivered + p.read), read \(p.read))  failed \(p.failed)  skipped \(p.skipped)"
                    + "  cancelled \(p.cancelled)"
            )
        }
        for post in channel_posts ?? [] {
            lines.append(
                "  channel  \(post.chat) (\(post.language)): \(post.state)"
                    + (post.attempts > 1 ? ", \(post.attempts) attempts" : "")
                    + (post.state == "failed" ? " (\(post.lastError ?? ""))" : "")
            )
        }
        return lines.joined(separator: "\n")
    }
}

/// Shows a bulletin's progress, redrawn until it is finished when following.
func followStatus(_ api: APIOptions, id: String, follow: Bool) async throws {
    let started = ContinuousClock.now
    // On a terminal the bars are redrawn in place; into a file or a pipe each change is a new block.
    let terminal = isatty(STDOUT_FILENO) == 1
    var previous = ""
    while true {
        let status = try BulletinStatus.decode(try api.expectSuccess(try await api.call("GET", "/v1/bulletins/\(id)")))
        let text = status.render()
        if text != previous {
            if terminal, !previous.isEmpty {
                let lines = previous.split(separator: "\n", omittingEmptySubsequences: false).count
                print("\u{1B}[\(lines)A", terminator: "")
                print(
                    text.split(separator: "\n", omittingEmptySubsequences: false).map { "\u{1B}[2K" + $0 }
                        .joined(separator: "\n"))
            } else {
                print(text)
            }
            fflush(nil)
            previous = text
        }
        if follow, status.finished {
            let elapsed = ContinuousClock.now - started
            let seconds = elapsed.inSeconds
            print(String(format: "done in %.1f s", seconds))
        }
        if !follow || status.finished { return }
        try await Task.sleep(for: .milliseconds(500))
    }
}

struct Post: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Post a bulletin through the admin API (from flags, or a JSON file as POST /v1/bulletins takes it)."
    )
    @OptionGroup var api: APIOptions
    @Option(help: "A JSON file with the bulletin; the flags below are then ignored.") var file: String?
    @Option(help: "The title.") var title: String?
    @Option(name: .customLong("it"), help: "The Italian text (required).") var italian: String?
    @Option(name: .customLong("zh"), help: "The Chinese text.") var chinese: String?
    @Option(name: .customLong("en"), help: "The English text.") var english: String?
    @Option(name: .customLong("topic"), help: "A topic (repeat for several).") var topics: [String] = []
    @Option(name: .customLong("channel"), help: "A channel (repeat; default all three).") var channels: [String] = []
    @Flag(help: "Urgent: at once, at any hour, to every active subscriber.") var urgent = false
    @Option(help: "Not before this time (ISO 8601, e.g. 2026-11-24T09:30:00+01:00).") var sendAt: String?
    @Option(help: "Idempotency-Key: posting again with the same key answers the first bulletin.") var idempotencyKey:
        String?
    @Flag(help: "Then follow its progress until it is done.") var follow = false

    func run() async throws {
        let body: Data
        if let file {
            body = try Data(contentsOf: URL(fileURLWithPath: file))
        } else {
            guard let title, let italian else { throw ValidationError("--title and --it are required (or --file)") }
            var json: [String: Any] = ["title": title, "topics": topics, "urgency": urgent ? "urgent" : "normal"]
            var texts = ["it": italian]
            texts["zh"] = chinese
            texts["en"] = english
            json["body"] = texts
            if !channels.isEmpty { json["channels"] = channels }
            if let sendAt { json["send_at"] = sendAt }
            body = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
        }
        var headers: [String: String] = [:]
        headers["Idempotency-Key"] = idempotencyKey
        let answer = try api.expectSuccess(try await api.call("POST", "/v1/bulletins", body: body, headers: headers))
        guard let object = try JSONSerialization.jsonObject(with: answer) as? [String: Any],
            let id = object["id"] as? String
        else { throw CLIError("unexpected answer: \(String(decoding: answer, as: UTF8.self))") }
        print("bulletin \(id) accepted")
        if follow { try await followStatus(api, id: id, follow: true) }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "A bulletin's state and progress per channel.")
    @OptionGroup var api: APIOptions
    @Argument(help: "The bulletin's id.") var id: String
    @Flag(help: "Redraw until the bulletin is done (sent or cancelled, nothing queued).") var follow = false

    func run() async throws {
        try await followStatus(api, id: id, follow: follow)
    }
}

struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cancel a bulletin: what is not yet sent is not sent.")
    @OptionGroup var api: APIOptions
    @Argument(help: "The bulletin's id.") var id: String

    func run() async throws {
        let status = try BulletinStatus.decode(
            try api.expectSuccess(try await api.call("POST", "/v1/bulletins/\(id)/cancel"))
        )
        print(status.render())
    }
}

struct Topics: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The topics citizens can follow.")
    @OptionGroup var api: APIOptions

    func run() async throws {
        struct List: Decodable {
            struct Topic: Decodable {
                var slug: String
                var names: [String: String]
            }
            var topics: [Topic]
        }
        let list = try JSONDecoder().decode(
            List.self, from: try api.expectSuccess(try await api.call("GET", "/v1/topics"))
        )
        for topic in list.topics {
            let names = ["it", "zh", "en"].compactMap { topic.names[$0] }.joined(separator: " / ")
            print(topic.slug.padding(toLength: 18, withPad: " ", startingAt: 0) + names)
        }
    }
}
