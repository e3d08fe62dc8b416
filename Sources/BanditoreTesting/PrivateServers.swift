import Foundation

/// A RabbitMQ or PostgreSQL of a test's own, started with `scripts/servers` on other ports and in another data
/// folder, so that a test can stop and restart it without disturbing the tests that share the main servers.
public final class PrivateServer: Sendable {
    public enum Kind: String, Sendable {
        case rabbitmq, postgres
    }

    public struct ScriptFailed: Error, CustomStringConvertible {
        public let command: String
        public let status: Int32
        public let output: String
        public var description: String { "scripts/servers \(command) exited \(status):\n\(output)" }
    }

    public let kind: Kind
    public let stateDirectory: URL
    public let port: Int
    private let environment: [String: String]

    /// Starts a private server; `portBase` must not collide with other tests' (each kind uses a few ports above it).
    public static func start(_ kind: Kind, portBase: Int) async throws -> PrivateServer {
        let state = TestServers.repositoryRoot.appending(path: ".local/private-\(kind.rawValue)-\(portBase)")
        let server = PrivateServer(kind: kind, stateDirectory: state, portBase: portBase)
        _ = try? await server.script("stop")
        try await server.script("start")
        return server
    }

    /// Starts a private server, runs `body` with it, and destroys it (data included) on every path.
    public static func with<T>(
        _ kind: Kind,
        portBase: Int,
        _ body: (PrivateServer) async throws -> T
    ) async throws -> T {
        let server = try await start(kind, portBase: portBase)
        do {
            let result = try await body(server)
            try await server.destroy()
            return result
        } catch {
            try? await server.destroy()
            throw error
        }
    }

    private init(kind: Kind, stateDirectory: URL, portBase: Int) {
        self.kind = kind
        self.stateDirectory = stateDirectory
        self.port = portBase
        self.environment = [
            "BANDITORE_STATE_DIR": stateDirectory.path,
            "BANDITORE_AMQP_PORT": "\(portBase)",
            "BANDITORE_AMQP_DIST_PORT": "\(portBase + 20000)",
            "BANDITORE_AMQP_MANAGEMENT_PORT": "\(portBase + 10000)",
            "BANDITORE_PG_PORT": "\(portBase)",
            "RABBITMQ_PLUGINS": "",
        ]
    }

    public var url: String {
        switch kind {
        case .rabbitmq: "amqp://guest:guest@127.0.0.1:\(port)/"
        case .postgres: "postgres://postgres@127.0.0.1:\(port)/banditore"
        }
    }

    public func stop() async throws { try await script("stop") }
    public func start() async throws { try await script("start") }

    /// Stops the server and removes its data.
    public func destroy() async throws {
        try await script("stop")
        try? FileManager.default.removeItem(at: stateDirectory)
    }

    @discardableResult
    private func script(_ action: String) async throws -> String {
        try FileManager.default.createDirectory(at: stateDirectory, withIntermediateDirectories: true)
        let logURL = stateDirectory.appending(path: "script.log")
        let executable = TestServers.repositoryRoot.appending(path: "scripts/servers").path
        let env = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let status = try await ChildProcess.run(
            executable, arguments: [action, kind.rawValue], environment: env, outputPath: logURL.path
        )
        let output = (try? String(contentsOf: logURL, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw ScriptFailed(command: "\(action) \(kind.rawValue)", status: status, output: output)
        }
        return output
    }
}
