/// Masks addresses for logs: phone numbers and chat ids keep their last three characters.
public enum Mask {
    public static func address(_ address: String) -> String {
        guard address.count > 3 else { return "***" }
        return String(repeating: "*", count: min(address.count - 3, 8)) + address.suffix(3)
    }
}
