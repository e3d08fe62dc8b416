/// One row of a result, in PostgreSQL's text format, with typed decoding.
public struct SQLRow: Sendable {
    /// Column names, shared by every row of a result.
    public let columns: SQLColumns
    let values: [String?]

    package init(columns: SQLColumns, values: [String?]) {
        self.columns = columns
        self.values = values
    }

    public var count: Int { values.count }

    /// Whether the column is NULL.
    public func isNull(_ index: Int) -> Bool { values[index] == nil }

    /// Decodes the column at `index`.
    public func decode<T: SQLDecodable>(_ type: T.Type = T.self, at index: Int) throws -> T {
        guard index < values.count else {
            throw DatabaseError(.decoding, message: "no column \(index) (the row has \(values.count))")
        }
        guard let text = values[index] else {
            guard let null = T.postgresNull else {
                throw DatabaseError(
                    .unexpectedNull, message: "column \(columns.names[index]) is NULL, expected \(T.self)")
            }
            return null
        }
        do {
            return try T(postgresText: text)
        } catch let error as DatabaseError {
            throw error
        } catch {
            throw DatabaseError(.decoding, message: "column \(columns.names[index]) is not a valid \(T.self)")
        }
    }

    /// Decodes the column named `name`.
    public func decode<T: SQLDecodable>(_ type: T.Type = T.self, column name: String) throws -> T {
        guard let index = columns.index(of: name) else {
            throw DatabaseError(.decoding, message: "no column named \(name)")
        }
        return try decode(T.self, at: index)
    }

    /// Decodes the leading columns as a tuple: `let (id, name) = try row.decode(Int.self, String.self)`.
    public func decode<each T: SQLDecodable>(_ types: repeat (each T).Type) throws -> (repeat each T) {
        var index = 0
        func next<V: SQLDecodable>(_ type: V.Type) throws -> V {
            defer { index += 1 }
            return try decode(V.self, at: index)
        }
        return (repeat try next((each T).self))
    }
}

/// The names of a result's columns.
public final class SQLColumns: Sendable {
    public let names: [String]
    private let indexByName: [String: Int]

    package init(names: [String]) {
        self.names = names
        var index: [String: Int] = [:]
        for (i, name) in names.enumerated() where index[name] == nil { index[name] = i }
        self.indexByName = index
    }

    public func index(of name: String) -> Int? { indexByName[name] }
}

/// The rows of a query, and how many rows the command affected.
public struct SQLResult: Sendable {
    public let rows: [SQLRow]
    /// Rows inserted, updated, deleted or copied (PQcmdTuples), 0 when it does not apply.
    public let affectedRows: Int

    /// The first row, or nil.
    public var first: SQLRow? { rows.first }
}
