import Foundation

/// Where the integration tests find the real servers.
///
/// `scripts/test` starts RabbitMQ and PostgreSQL and sets `AMQP_URL` and `DATABASE_URL`. A test that needs a
/// server and finds no URL fails with a message saying so: integration tests are never skipped silently.
public enum TestServers {
    public struct Missing: Error, CustomStringConvertible {
        public let variable: String
        public var description: String {
            "\(variable) is not set: run the tests with scripts/test, which starts RabbitMQ and PostgreSQL "
                + "and sets AMQP_URL and DATABASE_URL"
        }
    }

    public static func amqpURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["AMQP_URL"], !url.isEmpty else {
            throw Missing(variable: "AMQP_URL")
        }
        return url
    }

    public static func databaseURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["DATABASE_URL"], !url.isEmpty else {
            throw Missing(variable: "DATABASE_URL")
        }
        return url
    }

    /// The repository's root folder (for its scripts).
    public static let repositoryRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url
    }()

    /// A name no other test uses, for queues, exchanges and tables.
    public static func uniqueName(_ prefix: String) -> String {
        "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
    }
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
public func eventually(
    timeout: Duration = .seconds(10),
    every interval: Duration = .milliseconds(50),
    _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}
