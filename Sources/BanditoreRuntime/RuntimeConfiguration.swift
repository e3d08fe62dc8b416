import BanditoreAMQP
import BanditorePostgres
import Configuration
import Logging

/// What every service reads at start.
///
/// | key (environment variable) | type | default | |
/// |---|---|---|---|
/// | `amqp.url` (`AMQP_URL`) | string | `amqp://guest:guest@127.0.0.1:5673/` | secret |
/// | `database.url` (`DATABASE_URL`) | string | `postgres://postgres@127.0.0.1:5433/banditore` | secret |
/// | `database.maxConnections` (`DATABASE_MAX_CONNECTIONS`) | int | 8 | |
/// | `http.host` (`HTTP_HOST`) | string | `127.0.0.1` | |
/// | `http.port` (`HTTP_PORT`) | int | the service's own | |
/// | `log.level` (`LOG_LEVEL`) | string | `info` | |
/// | `log.format` (`LOG_FORMAT`) | `json` or `text` | `json` | |
/// | `migrate.onStart` (`MIGRATE_ON_START`) | bool | false | |
public struct RuntimeConfiguration: Sendable {
    public static let defaultAMQPURL = "amqp://guest:guest@127.0.0.1:5673/"
    public static let defaultDatabaseURL = "postgres://postgres@127.0.0.1:5433/banditore"

    public var amqpURL: String
    public var databaseURL: String
    public var databaseMaxConnections: Int
    public var httpHost: String
    public var httpPort: Int
    public var logLevel: Logger.Level
    public var jsonLogs: Bool
    public var migrateOnStart: Bool

    public init(reader: ConfigReader, defaultPort: Int) {
        amqpURL = reader.string(forKey: "amqp.url", isSecret: true, default: Self.defaultAMQPURL)
        databaseURL = reader.string(forKey: "database.url", isSecret: true, default: Self.defaultDatabaseURL)
        databaseMaxConnections = reader.int(forKey: "database.maxConnections", default: 8)
        httpHost = reader.string(forKey: "http.host", default: "127.0.0.1")
        httpPort = reader.int(forKey: "http.port", default: defaultPort)
        logLevel = Logger.Level(rawValue: reader.string(forKey: "log.level", default: "info").lowercased()) ?? .info
        jsonLogs = reader.string(forKey: "log.format", default: "json").lowercased() != "text"
        migrateOnStart = reader.bool(forKey: "migrate.onStart", default: false)
    }

    /// The configuration read from the process environment.
    public static func fromEnvironment(defaultPort: Int) -> RuntimeConfiguration {
        RuntimeConfiguration(reader: ConfigReader(provider: EnvironmentVariablesProvider()), defaultPort: defaultPort)
    }
}
