/// SQL with its parameters. Interpolated values become `$1`, `$2`, … so they are never spliced into the text:
///
///     let query: SQLQuery = "SELECT id FROM subscribers WHERE channel = \(channel) AND active"
///
/// Use `\(unescaped: name)` only for identifiers the code itself controls.
public struct SQLQuery: Sendable, ExpressibleByStringInterpolation {
    public var sql: String
    public var binds: [String?]

    public init(sql: String, binds: [(any SQLEncodable)?] = []) {
        self.sql = sql
        self.binds = binds.map { $0?.postgresText }
    }

    public init(stringLiteral value: String) {
        self.sql = value
        self.binds = []
    }

    public init(stringInterpolation: StringInterpolation) {
        self.sql = stringInterpolation.sql
        self.binds = stringInterpolation.binds
    }

    public struct StringInterpolation: StringInterpolationProtocol {
        var sql = ""
        var binds: [String?] = []

        public init(literalCapacity: Int, interpolationCount: Int) {
            sql.reserveCapacity(literalCapacity + interpolationCount * 3)
        }

        public mutating func appendLiteral(_ literal: String) { sql += literal }

        public mutating func appendInterpolation(_ value: some SQLEncodable) {
            binds.append(value.postgresText)
            sql += "$\(binds.count)"
        }

        public mutating func appendInterpolation(_ value: (some SQLEncodable)?) {
            binds.append(value?.postgresText)
            sql += "$\(binds.count)"
        }

        public mutating func appendInterpolation(unescaped text: String) { sql += text }
    }
}
