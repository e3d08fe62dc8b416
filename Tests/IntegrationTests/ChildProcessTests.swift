import BanditoreTesting
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Processes the tests start")
struct ChildProcessTests {
    @Test("a child inherits no descriptor of the test process but its standard ones (a socket it held would stay open)")
    func noInheritedDescriptors() async throws {
        // Sockets without close-on-exec, like SwiftNIO's.
        var ends: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0)
        defer {
            close(ends[0])
            close(ends[1])
        }
        #expect(fcntl(ends[0], F_GETFD) & FD_CLOEXEC == 0)
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("fds-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let status = try await ChildProcess.run(
            "/bin/sh", arguments: ["-c", #"for f in /proc/$$/fd/*; do echo "${f##*/} $(readlink "$f")"; done"#],
            environment: [:], outputPath: output
        )
        #expect(status == 0)
        // Each line: a descriptor of the shell and what it is; the pipe of its own `$(…)` is left out.
        let lines = try String(contentsOfFile: output, encoding: .utf8).split(separator: "\n")
        let descriptors = Set(lines.filter { !$0.contains(" pipe:") }.map { String($0.split(separator: " ")[0]) })
        #expect(descriptors == ["0", "1", "2"], "the child's descriptors: \(lines)")
        #expect(!lines.contains { $0.contains("socket:") })
    }
}
