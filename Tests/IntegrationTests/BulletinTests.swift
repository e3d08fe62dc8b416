import BanditoreCore
import BanditoreProviderSim
import BanditoreStore
import BanditoreTesting
import Foundation
import Testing

/// Bulletins posted on the admin API, composed and delivered through the simulator: ingest, the registry, the
/// composer and a dispatcher per channel, in a vhost and a database of the test's own.
@Suite("Bulletins end to end")
struct BulletinTests {
    typealias Town = SubscriptionTests.Town
    let auth = ["Authorization": "Bearer test-admin-token", "Content-Type": "application/json"]

    // The names are the wire format's.
    // swift-format-ignore: AlwaysUseLowerCamelCase
    struct View: Decodable {
        var id: String
        var state: String
        var scheduled_for: Date?
        var progress: [String: ChannelProgress]
        var channel_posts: [ChannelPostStatus]
    }

    func view(_ town: Town, _ id: String) async throws -> View {
        let (status, body) = try await town.get("/v1/bulletins/\(id)", headers: auth)
        #expect(status == 200, "\(body)")
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(View.self, from: Data(body.utf8))
    }

    func post(_ town: Town, _ json: String, key: String? = nil) async throws -> (Int, String) {
        var headers = auth
        if let key { headers["Idempotency-Key"] = key }
        return try await town.post("/v1/bulletins", body: Array(json.utf8), headers: headers)
    }

    func id(_ body: String) throws -> String {
        try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])["id"] as! String
    }

    /// Waits until the composer has scheduled the bulletin (it takes it a moment after the 202) and returns it.
    func scheduled(_ town: Town, _ id: String) async throws -> View {
        let scheduled = await eventually(timeout: .seconds(10)) { (try? await view(town, id))?.state == "scheduled" }
        #expect(scheduled, "bulletin \(id) was not scheduled")
        return try await view(town, id)
    }

    /// Waits until the bulletin's fan-out is done and nothing of it is queued.
    func settled(_ town: Town, _ id: String) async throws -> View {
        var last: View?
        _ = await eventually(timeout: .seconds(180), every: .milliseconds(250)) {
            guard let current = try? await view(town, id) else { return false }
            last = current
            return current.state == "sent" && current.progress.values.allSatisfy { $0.queued == 0 }
        }
        return try #require(last)
    }

    @Test(
        "3,000 subscribers: a farmacie bulletin reaches exactly its followers once, in their language; an urgent one reaches everyone active; idempotent POST; bad input named; a later send_at waits"
    )
    func audience() async throws {
        let town = try await Town.start(
            "it_bulletins", base: 80,
            composerEnvironment: [
                "SERVICE_HOURS_WINDOWS": "mon-sun 00:00-24:00", "COMPOSER_POLL_SECONDS": "0.2",
                "TELEGRAM_CHANNEL_POSTS": "scuola:it=@scuole_prato,scuola:zh=@scuole_prato_zh",
            ]
        )
        for channel in Channel.allCases {
            try await town.play(channel, .subscribe, first: 0, count: 1000, concurrency: 32)
        }
        /// The Telegram public channels' posts of a bulletin, once they are all recorded sent.
        func posts(_ id: String) async throws -> [ChannelPostStatus] {
            var last: [ChannelPostStatus] = []
            _ = await eventually(timeout: .seconds(30), every: .milliseconds(250)) {
                guard let posts = try? await view(town, id).channel_posts else { return false }
                last = posts
                return !posts.isEmpty && posts.allSatisfy { $0.state == "sent" }
            }
            return last
        }
        func channelMessages(_ text: String) async throws -> [String: [String]] {
            Dictionary(
                grouping: try await town.harness.simMessages(.telegram).filter {
                    $0.recipient.hasPrefix("@") && $0.text.contains(text)
                },
                by: \.recipient
            ).mapValues { $0.map(\.text) }
        }
        let registered = await eventually(timeout: .seconds(60)) {
            let row = try? await town.harness.database.query("SELECT count(*) FROM subscribers WHERE active").first
            return (try? row?.decode(Int.self, at: 0)) == 3000
        }
        try #require(registered)
        // Mixed languages and topics, and some who left: the n-th subscriber (by id) speaks
        // it/it/zh/en/it by n % 5, follows farmacie when n % 3 == 0 and scuola when n % 2 == 0, and left when n % 10 == 7.
        let db = town.harness.database
        try await db.query(
            """
            WITH n AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM subscribers)
            UPDATE subscribers s SET language = (ARRAY['it','it','zh','en','it'])[(n.n % 5) + 1],
                   active = (n.n % 10 <> 7), inactive_reason = CASE WHEN n.n % 10 = 7 THEN 'command' END
              FROM n WHERE n.id = s.id
            """
        )
        try await db.query("DELETE FROM subscriber_topics")
        try await db.query(
            """
            WITH n AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM subscribers)
            INSERT INTO subscriber_topics (subscriber_id, topic)
            SELECT id, 'farmacie' FROM n WHERE n % 3 = 0
            UNION ALL SELECT id, 'scuola' FROM n WHERE n % 2 = 0
            """
        )
        var expected: [Channel: [String: String]] = [:]  // address → language
        var everyone: [Channel: Set<String>] = [:]
        for row in try await db.query(
            """
            SELECT s.channel, s.address, s.language, EXISTS (SELECT 1 FROM subscriber_topics t
                    WHERE t.subscriber_id = s.id AND t.topic = 'farmacie')
              FROM subscribers s WHERE s.active
            """
        ).rows {
            let (channelName, address, language, follows) = try row.decode(
                String.self, String.self, String.self, Bool.self)
            let channel = Channel(rawValue: channelName)!
            everyone[channel, default: []].insert(address)
            if follows { expected[channel, default: [:]][address] = language }
        }
        #expect(everyone.values.map(\.count).reduce(0, +) == 2700)

        // Bad input: a clear 4xx naming the field, and nothing created.
        let valid =
            #"{"title":"Farmacia di turno","body":{"it":"Oggi: farmacia Centrale.","zh":"今天：中央药房。","en":"Today: Central pharmacy."},"topics":["farmacie"]}"#
        for (json, status, field) in [
            (#"{"title":"T","body":{"zh":"只有中文"},"topics":["farmacie"]}"#, 422, "body.it"),
            (#"{"title":"T","body":{"it":"x"},"topics":["mercato"]}"#, 422, "topics[0]"),
            (
                #"{"title":"T","body":{"it":"\#(String(repeating: "a", count: 300))"},"topics":["farmacie"]}"#, 422,
                "body.it"
            ),
            (#"{"body":{"it":"x"},"topics":["farmacie"]}"#, 400, "title"),
            (#"{"title":"T","body":{"it":"x"},"topics":"farmacie"}"#, 400, "topics"),
            (#"{"title":"T","body":{"it":"x"},"topics":["farmacie"],"urgency":"soon"}"#, 422, "urgency"),
            (#"{"title":"T","body":{"it":"x"},"topics":["farmacie"],"send_at":"domani alle 8"}"#, 400, "send_at"),
        ] {
            let (got, body) = try await post(town, json)
            #expect(got == status, "\(json): \(body)")
            #expect(body.contains(#""field":"\#(field)""#), "\(json): \(body)")
        }
        #expect(try await post(town, "{not json").0 == 400)
        #expect(
            try await town.post("/v1/bulletins", body: Array(valid.utf8), headers: ["Authorization": "Bearer nope"]).0
                == 401)
        #expect(try await db.query("SELECT count(*) FROM bulletins").first!.decode(Int.self, at: 0) == 0)

        // The same POST twice with one Idempotency-Key: one bulletin; the key with another body: refused.
        let (status, body) = try await post(town, valid, key: "rota-2026-11-23")
        #expect(status == 202, "\(body)")
        let farmacie = try id(body)
        let (again, replay) = try await post(town, valid, key: "rota-2026-11-23")
        #expect(again == 202)
        #expect(try id(replay) == farmacie)
        #expect(
            try await post(town, valid.replacingOccurrences(of: "Centrale", with: "Nord"), key: "rota-2026-11-23").0
                == 422)
        #expect(try await db.query("SELECT count(*) FROM bulletins").first!.decode(Int.self, at: 0) == 1)

        let done = try await settled(town, farmacie)
        for channel in Channel.allCases {
            let progress = try #require(done.progress[channel.rawValue])
            #expect(progress.audience == expected[channel]?.count, "\(channel): \(progress)")
            #expect(progress.sent + progress.delivered + progress.read == progress.audience, "\(channel): \(progress)")
            let messages = try await town.harness.simMessages(channel)
                .filter { $0.kind == "template" || (channel == .telegram && !$0.recipient.hasPrefix("@")) }
            let received = Dictionary(
                grouping: messages.filter { $0.text.contains("Farmacia di turno") }, by: \.recipient)
            #expect(Set(received.keys) == Set(expected[channel]!.keys), "\(channel): exactly the followers")
            #expect(received.values.allSatisfy { $0.count == 1 }, "\(channel): once each")
            let words = ["it": "farmacia Centrale", "zh": "中央药房", "en": "Central pharmacy"]
            for (address, language) in expected[channel]! {
                #expect(
                    received[address]?.first?.text.contains(words[language]!) == true,
                    "\(channel) \(address) in \(language)")
            }
        }

        // An urgent bulletin reaches every active subscriber, whatever they follow.
        let (urgentStatus, urgentBody) = try await post(
            town,
            #"{"title":"Allerta meteo","body":{"it":"Vento forte: restate a casa."},"topics":[],"urgency":"urgent"}"#
        )
        #expect(urgentStatus == 202, "\(urgentBody)")
        let urgent = try await settled(town, try id(urgentBody))
        for channel in Channel.allCases {
            #expect(urgent.progress[channel.rawValue]?.audience == everyone[channel]?.count, "\(channel)")
            let reached = Set(
                try await town.harness.simMessages(channel)
                    .filter { $0.text.contains("Vento forte") && !$0.recipient.hasPrefix("@") }.map(\.recipient)
            )
            #expect(reached == everyone[channel], "\(channel)")
        }
        // The school channels take no farmacie bulletin, but an urgent one, once each, in Italian (its only body).
        #expect(done.channel_posts.isEmpty)
        #expect(try await channelMessages("Farmacia di turno").isEmpty)
        let urgentPosts = try await posts(try id(urgentBody))
        #expect(
            urgentPosts.map { "\($0.chat) \($0.language) \($0.state) \($0.attempts)" } == [
                "@scuole_prato it sent 1", "@scuole_prato_zh zh sent 1",
            ])
        #expect(urgentPosts.allSatisfy { $0.providerMessageID != nil })
        #expect(
            try await channelMessages("Vento forte").mapValues(\.count) == ["@scuole_prato": 1, "@scuole_prato_zh": 1])

        // A later send_at: scheduled for then, and sent once it has come.
        let at = Date().addingTimeInterval(3)
        let formatter = ISO8601DateFormatter()
        let (laterStatus, laterBody) = try await post(
            town,
            #"{"title":"Scuole","body":{"it":"Mensa chiusa domani.","zh":"明天食堂关闭。"},"topics":["scuola"],"channels":["telegram"],"send_at":"\#(formatter.string(from: at))"}"#
        )
        #expect(laterStatus == 202, "\(laterBody)")
        let later = try id(laterBody)
        let waiting = try await scheduled(town, later)
        #expect(waiting.state == "scheduled")
        #expect(abs((waiting.scheduled_for ?? .distantPast).timeIntervalSince(at)) < 1)
        #expect(waiting.progress["telegram"]?.audience == 0)
        let sent = try await settled(town, later)
        #expect((sent.progress["telegram"]?.sent ?? 0) > 0)
        let firstSend = try await town.harness.simMessages(.telegram).filter { $0.text.contains("Mensa chiusa") }
            .map(\.acceptedAt).min()
        #expect(try #require(firstSend) >= at.addingTimeInterval(-1))
        // A scuola bulletin goes to each school channel once, in the channel's language.
        #expect(try await posts(later).count == 2)
        let schoolPosts = try await channelMessages("Scuole")
        #expect(
            schoolPosts["@scuole_prato"]?.count == 1
                && schoolPosts["@scuole_prato"]?.first?.contains("Mensa chiusa") == true)
        #expect(
            schoolPosts["@scuole_prato_zh"]?.count == 1
                && schoolPosts["@scuole_prato_zh"]?.first?.contains("食堂") == true)

        // The command line, as an admin uses it: topics, post and follow to the end, status, cancel.
        let banditore = ServiceProcess.binaryDirectory.appending(path: "banditore").path
        let api = ["BANDITORE_API_URL": town.ingestURL, "BANDITORE_ADMIN_TOKEN": "test-admin-token"]
        let topics = try await runCLI(banditore, ["topics"], api)
        #expect(topics.status == 0, "\(topics.output)")
        #expect(topics.output.contains("farmacie") && topics.output.contains("protezione-civile"), "\(topics.output)")
        let posted = try await runCLI(
            banditore,
            [
                "post", "--title", "Festa", "--it", "Festa in piazza sabato.", "--en", "Party on Saturday.", "--urgent",
                "--channel", "telegram", "--follow",
            ],
            api
        )
        #expect(posted.status == 0, "\(posted.output)")
        let cliID = try #require(
            posted.output.split(separator: " ").dropFirst().first.map(String.init), "\(posted.output)"
        )
        #expect(posted.output.contains("[sent, urgent]"), "\(posted.output)")
        let telegramFollowers = everyone[.telegram]!.count
        #expect(posted.output.contains("\(telegramFollowers)/\(telegramFollowers)"), "\(posted.output)")
        #expect(posted.output.contains("channel  @scuole_prato (it): sent"), "\(posted.output)")
        #expect(posted.output.contains("channel  @scuole_prato_zh (zh): sent"), "\(posted.output)")
        let shown = try await runCLI(banditore, ["status", cliID], api)
        #expect(shown.status == 0 && shown.output.contains("telegram"), "\(shown.output)")
        let unauthorized = try await runCLI(banditore, ["status", cliID], ["BANDITORE_API_URL": town.ingestURL])
        #expect(unauthorized.status != 0 && unauthorized.output.contains("401"), "\(unauthorized.output)")
        let cancelled = try await runCLI(banditore, ["cancel", cliID], api)
        #expect(cancelled.status == 0 && cancelled.output.contains("[cancelled, urgent]"), "\(cancelled.output)")
        await town.stop()
    }

    @Test(
        "cancel halfway: nothing is sent once the cancel is answered and the counts add up; the composer killed mid fan-out resumes and everyone gets it once; a normal bulletin waits for the service window"
    )
    func cancelAndCrash() async throws {
        var town = try await Town.start(
            "it_bulletins_cancel", base: 100, channels: [.telegram],
            composerEnvironment: [
                "SERVICE_HOURS_WINDOWS": "mon-sun 00:00-24:00", "COMPOSER_POLL_SECONDS": "0.2",
                "COMPOSER_CHUNK": "1", "COMPOSER_CHECKPOINT": "1",
            ],
            dispatcherEnvironment: ["DISPATCH_RATE_PER_SECOND": "150"]
        )
        try await town.play(.telegram, .subscribe, first: 0, count: 1500, concurrency: 32)
        let registered = await eventually(timeout: .seconds(60)) {
            let row = try? await town.harness.database.query("SELECT count(*) FROM subscribers WHERE active").first
            return (try? row?.decode(Int.self, at: 0)) == 1500
        }
        try #require(registered)
        let db = town.harness.database

        // Cancel halfway through a 1,500-recipient bulletin sent at 150/s.
        let (status, body) = try await post(
            town,
            #"{"title":"Sciopero","body":{"it":"Sciopero dei trasporti scolastici."},"topics":["scuola"],"channels":["telegram"]}"#
        )
        #expect(status == 202, "\(body)")
        let strike = try id(body)
        func simCount(_ text: String) async throws -> Int {
            try await town.harness.simMessages(.telegram).filter { $0.text.contains(text) }.count
        }
        let halfway = await eventually(timeout: .seconds(60), every: .milliseconds(50)) {
            ((try? await simCount("Sciopero dei trasporti")) ?? 0) >= 200
        }
        #expect(halfway)
        let (cancelStatus, cancelBody) = try await town.post(
            "/v1/bulletins/\(strike)/cancel", body: [], headers: auth
        )
        #expect(cancelStatus == 200, "\(cancelBody)")
        let atCancel = try await simCount("Sciopero dei trasporti")
        try await Task.sleep(for: .seconds(2))
        #expect(try await simCount("Sciopero dei trasporti") == atCancel, "sends after the cancel was answered")
        let cancelled = try await view(town, strike)
        #expect(cancelled.state == "cancelled")
        let progress = try #require(cancelled.progress["telegram"])
        #expect(progress.audience == 1500)
        #expect(progress.queued == 0)
        #expect(progress.cancelled > 0 && progress.sent > 0, "\(progress)")
        #expect(progress.sent + progress.cancelled + progress.failed == progress.audience, "\(progress)")
        #expect(progress.sent == atCancel, "\(progress) vs \(atCancel) received")

        // The composer killed with SIGKILL mid fan-out (one recipient per job and per checkpoint, so it takes a
        // while), then started again: it resumes at its cursor and every follower gets the bulletin once.
        let (crashStatus, crashBody) = try await post(
            town,
            #"{"title":"Iscrizioni","body":{"it":"Iscrizioni al nido aperte."},"topics":["scuola"],"channels":["telegram"]}"#
        )
        #expect(crashStatus == 202, "\(crashBody)")
        let enrolment = try id(crashBody)
        let midway = await eventually(timeout: .seconds(60), every: .milliseconds(20)) {
            let row = try? await db.query(
                "SELECT state = 'sending' AND fanout_cursor > 0 FROM bulletins WHERE id = \(UUID(uuidString: enrolment)!)"
            ).first
            return (try? row?.decode(Bool.self, at: 0)) == true
        }
        #expect(midway, "the fan-out was over before it could be interrupted")
        let composer = try #require(town.composer)
        composer.signal(SIGKILL)
        _ = await composer.waitForExit()
        town.composer = try await town.harness.service(
            "banditore-composer", port: 18605,
            environment: ["SERVICE_HOURS_WINDOWS": "mon-sun 00:00-24:00", "COMPOSER_POLL_SECONDS": "0.2"]
        )
        let done = try await settled(town, enrolment)
        #expect(done.progress["telegram"]?.sent == 1500, "\(done.progress)")
        let received = try await town.harness.simMessages(.telegram).filter { $0.text.contains("Iscrizioni al nido") }
        #expect(received.count == 1500)
        #expect(Set(received.map(\.recipient)).count == 1500, "duplicates after the restart")

        // A service window that opens at the next full minute (at least 20 s away, UTC): a normal bulletin posted
        // before it is scheduled for its opening and goes then, not before.
        let now = Date()
        var opening = Date(timeIntervalSince1970: (now.timeIntervalSince1970 / 60).rounded(.down) * 60 + 60)
        if opening.timeIntervalSince(now) < 20 { opening.addTimeInterval(60) }
        var utc = Calendar(identifier: .gregorian)
        utc.timeZone = TimeZone(identifier: "UTC")!
        let parts = utc.dateComponents([.hour, .minute], from: opening)
        guard parts.hour! < 23 || parts.minute! < 58 else {
            await town.stop()
            return
        }  // no window across midnight
        let window = String(format: "mon-sun %02d:%02d-23:59", parts.hour!, parts.minute!)
        let restarted = try #require(town.composer)
        restarted.signal(SIGTERM)
        #expect(await restarted.waitForExit() == 0)
        town.composer = try await town.harness.service(
            "banditore-composer", port: 18605,
            environment: [
                "SERVICE_HOURS_WINDOWS": window, "SERVICE_HOURS_TIME_ZONE": "UTC", "COMPOSER_POLL_SECONDS": "0.2",
            ]
        )
        let (windowStatus, windowBody) = try await post(
            town,
            #"{"title":"Mensa","body":{"it":"Menu della settimana."},"topics":["scuola"],"channels":["telegram"]}"#
        )
        #expect(windowStatus == 202, "\(windowBody)")
        let menu = try id(windowBody)
        let waiting = try await scheduled(town, menu)
        #expect(
            waiting.scheduled_for == opening, "\(String(describing: waiting.scheduled_for)) vs \(opening) for \(window)"
        )
        let menuSent = try await settled(town, menu)
        #expect(menuSent.progress["telegram"]?.sent == 1500)
        let first = try await town.harness.simMessages(.telegram).filter { $0.text.contains("Menu della settimana") }
            .map(\.acceptedAt).min()
        #expect(try #require(first) >= opening)
        await town.stop()
    }
}
