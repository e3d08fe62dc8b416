import BanditorePostgres
import Foundation
import Logging

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A virtual host and a database of a test's own on the shared test servers: the test declares the whole topology
/// and runs migrations there without seeing other tests' queues and rows, while everything stays real.
public struct IsolatedServers: Sendable {
    /// `amqp://…/<vhost>`.
    public let amqpURL: String
    /// `postgres://…/<database>`.
    public let databaseURL: String
    public let name: String

    /// Creates a vhost (through RabbitMQ's management API) and a database named after `prefix`.
    public static func make(_ prefix: String) async throws -> IsolatedServers {
        let name = TestServers.uniqueName(prefix).replacingOccurrences(of: "-", with: "_")
        let amqp = try TestServers.amqpURL()
        let database = try TestServers.databaseURL()

        try await managementPUT("/api/vhosts/\(name)", body: "{}")
        try await managementPUT(
            "/api/permissions/\(name)/guest", body: #"{"configure":".*","write":".*","read":".*"}"#
        )
        let client = try DatabasePool(url: database, logger: Logger(label: "test.isolated"))
        try await client.query(SQLQuery(sql: "CREATE DATABASE \"\(name)\""))
        await client.close()

        return IsolatedServers(
            amqpURL: replacePath(of: amqp, with: "/\(name)"),
            databaseURL: replacePath(of: database, with: "/\(name)"),
            name: name
        )
    }

    /// The management API's base URL: `AMQP_MANAGEMENT_URL`, else port 15673 on the AMQP host.
    public static var managementURL: String {
        ProcessInfo.processInfo.environment["AMQP_MANAGEMENT_URL"] ?? "http://127.0.0.1:15673"
    }

    private static func managementPUT(_ path: String, body: String) async throws {
        var request = URLRequest(url: URL(string: managementURL + path)!)
        request.httpMethod = "PUT"
        request.httpBody = Data(body.utf8)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("Basic " + Data("guest:guest".utf8).base64EncodedString(), forHTTPHeaderField: "Authorization")
        let (data, response) = try await URLSession.shared.data(for: request)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            throw ManagementError(
                description:
                    "RabbitMQ management PUT \(path) answered \(status): \(String(decoding: data, as: UTF8.self))"
            )
        }
    }

    public struct ManagementError: Error, CustomStringConvertible {
        public let description: String
    }

    private static func replacePath(of url: String, with path: String) -> String {
        guard var components = URLComponents(string: url) else { return url }
        components.path = path
        return components.string ?? url
    }
}
