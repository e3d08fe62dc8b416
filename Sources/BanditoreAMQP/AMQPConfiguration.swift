import struct Foundation.URLComponents

/// How to reach and talk to a broker.
public struct AMQPConfiguration: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String
    public var virtualHost: String
    /// Heartbeat interval negotiated with the broker, in seconds (0 disables heartbeats).
    public var heartbeat: Int
    /// How long the TCP connect and the AMQP handshake may take, in seconds.
    public var connectTimeout: Double
    /// How long a synchronous broker call (declare, consume) may take, in seconds.
    public var rpcTimeout: Double
    /// First and longest wait between reconnection attempts, in seconds.
    public var reconnectBackoff: (initial: Double, maximum: Double) {
        get { (reconnectInitial, reconnectMaximum) }
        set { (reconnectInitial, reconnectMaximum) = newValue }
    }
    var reconnectInitial: Double = 0.1
    var reconnectMaximum: Double = 5
    /// At most this many published messages wait for a confirm; `publish` waits for room beyond it.
    public var maxUnconfirmed: Int
    /// A name shown in the broker's management UI.
    public var connectionName: String

    public init(
        host: String = "127.0.0.1",
        port: Int = 5672,
        user: String = "guest",
        password: String = "guest",
        virtualHost: String = "/",
        heartbeat: Int = 30,
        connectTimeout: Double = 5,
        rpcTimeout: Double = 30,
        maxUnconfirmed: Int = 10_000,
        connectionName: String = "banditore"
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.virtualHost = virtualHost
        self.heartbeat = heartbeat
        self.connectTimeout = connectTimeout
        self.rpcTimeout = rpcTimeout
        self.maxUnconfirmed = maxUnconfirmed
        self.connectionName = connectionName
    }

    /// Reads `amqp://user:password@host:port/vhost` (user, password and vhost percent-encoded; an empty path is
    /// the default vhost `/`). Query items `heartbeat` and `connection_timeout` are honoured.
    public init(url: String) throws {
        guard let components = URLComponents(string: url), components.scheme == "amqp",
            let host = components.host, !host.isEmpty
        else {
            throw AMQPError(.invalidURL, detail: "expected amqp://user:password@host:port/vhost")
        }
        self.init(host: host)
        if let port = components.port { self.port = port }
        if let user = components.user { self.user = user }
        if let password = components.password { self.password = password }
        let path = components.path
        if path.count > 1 {
            self.virtualHost = String(path.dropFirst())
        }
        for item in components.queryItems ?? [] {
            switch item.name {
            case "heartbeat": if let v = item.value.flatMap(Int.init) { heartbeat = v }
            case "connection_timeout": if let v = item.value.flatMap(Double.init) { connectTimeout = v }
            default: break
            }
        }
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.host == rhs.host && lhs.port == rhs.port && lhs.user == rhs.user && lhs.password == rhs.password
            && lhs.virtualHost == rhs.virtualHost && lhs.heartbeat == rhs.heartbeat
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(host)
        hasher.combine(port)
        hasher.combine(virtualHost)
    }
}
