import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Runs programs with `posix_spawn` and waits for them on a thread of their own (never on the cooperative pool).
/// Foundation's `Process` is avoided: on Linux its monitoring threads can keep a test process from exiting.
public enum ChildProcess {
    public struct SpawnFailed: Error, CustomStringConvertible {
        public let path: String
        public let errno: Int32
        public var description: String { "could not start \(path): \(String(cString: strerror(errno)))" }
    }

    /// Starts `path` with output appended to `outputPath` (or discarded) and returns its process id.
    public static func spawn(
        _ path: String,
        arguments: [String],
        environment: [String: String],
        outputPath: String? = nil
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        let out = outputPath ?? "/dev/null"
        posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else of the test process: SwiftNIO's sockets are not close-on-exec, and a child holding a copy of
        // a connection another test's server closed keeps it open (the client waits for an answer that never comes).
        guard closeFrom(&actions, 3) == 0 else { throw SpawnFailed(path: path, errno: EINVAL) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Its own process group, so that a test can signal it and its children together.
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)

        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard rc == 0 else { throw SpawnFailed(path: path, errno: rc) }
        return pid
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), which its Swift module does not import.
    private static let closeFrom: @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32 = {
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else {
            fatalError("glibc 2.34 or later is needed (posix_spawn_file_actions_addclosefrom_np)")
        }
        return unsafeBitCast(
            symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self
        )
    }()

    /// Waits for `pid` to exit and returns its exit status (128 + signal when killed).
    public static func wait(_ pid: pid_t) async -> Int32 {
        await withCheckedContinuation { continuation in
            let thread = Thread {
                var status: Int32 = 0
                while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
                let exited = status & 0x7f == 0
                continuation.resume(returning: exited ? (status >> 8) & 0xff : 128 + (status & 0x7f))
            }
            thread.start()
        }
    }

    /// Runs a program to completion and returns its exit status.
    public static func run(
        _ path: String,
        arguments: [String],
        environment: [String: String],
        outputPath: String? = nil
    ) async throws -> Int32 {
        let pid = try spawn(path, arguments: arguments, environment: environment, outputPath: outputPath)
        return await wait(pid)
    }
}
