import Foundation
import Synchronization

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
#if canImport(Glibc)
    import Glibc
#endif

/// A Banditore executable started as a real process, for tests that run the services as operators do.
public final class ServiceProcess: Sendable {
    public let name: String
    public let port: Int
    public let pid: pid_t
    public let logPath: String
    private let exited = Mutex(false)

    /// The folder holding the built executables (beside the test bundle).
    public static var binaryDirectory: URL {
        let exe =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent()
    }

    /// Starts `name` with `HTTP_PORT=port`, the test servers' URLs and `environment` on top.
    public static func start(_ name: String, port: Int, environment: [String: String] = [:]) throws -> ServiceProcess {
        var env = ProcessInfo.processInfo.environment
        env["HTTP_PORT"] = "\(port)"
        env["LOG_FORMAT"] = "json"
        for (key, value) in environment { env[key] = value }
        let logPath = TestServers.repositoryRoot.appending(path: ".local/test-logs/\(name)-\(port).log").path
        try FileManager.default.createDirectory(
            atPath: (logPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true
        )
        try? FileManager.default.removeItem(atPath: logPath)
        let path = binaryDirectory.appending(path: name).path
        let pid = try ChildProcess.spawn(path, arguments: [], environment: env, outputPath: logPath)
        return ServiceProcess(name: name, port: port, pid: pid, logPath: logPath)
    }

    private init(name: String, port: Int, pid: pid_t, logPath: String) {
        self.name = name
        self.port = port
        self.pid = pid
        self.logPath = logPath
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// GETs `path` on the service; nil when nothing answers.
    public func get(_ path: String) async -> (status: Int, body: String)? {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.timeoutInterval = 2
        guard let (data, response) = try? await URLSession.shared.data(for: request),
            let http = response as? HTTPURLResponse
        else { return nil }
        return (http.statusCode, String(decoding: data, as: UTF8.self))
    }

    /// Sends a signal (SIGTERM by default).
    /// Does nothing once the process has exited and been reaped (its pid may belong to another by then).
    public func signal(_ signal: Int32 = SIGTERM) {
        exited.withLock { exited in
            if !exited { kill(pid, signal) }
        }
    }

    /// Waits for the process to exit and returns its status.
    public func waitForExit() async -> Int32 {
        let status = await ChildProcess.wait(pid)
        exited.withLock { $0 = true }
        return status
    }
}
