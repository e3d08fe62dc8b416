/// A service was started without what it needs.
public struct ServiceSetupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
