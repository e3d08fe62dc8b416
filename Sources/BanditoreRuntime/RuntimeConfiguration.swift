import BanditoreAMQP
import BanditoreChannels
import BanditorePostgres
import Configuration
import Logging

/// What every service reads at start.
///
/// Its settings, with their environment variables and defaults, are tabled in the README (which
/// `scripts/check-config` holds to the `reader` calls here).
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

extension BulletinTemplates {
    /// The provider templates bulletins are sent with: ingest checks a bulletin against them when it is posted,
    /// the composer renders with them.
    public init(reader: ConfigReader) {
        let defaults = BulletinTemplates()
        self.init(
            whatsappName: reader.string(forKey: "whatsapp.bulletinTemplate", default: defaults.whatsappName),
            wechatID: reader.string(forKey: "wechat.bulletinTemplateId", default: defaults.wechatID)
        )
    }
}
