/// Masks addresses for logs: phone numbers and chat ids keep their last three characters.
public enum Mask {
    public static func address(_ address: String) -> String {
        guard address.count > 3 else { return "***" }
        return String(repeating: "*", count: min(address.count - 3, 8)) + address.suffix(3)
    }
}

/// A citizen's key for routing their commands in order without naming them: FNV-1a of channel and address.
public enum CitizenKey {
    public static func of(channel: Channel, address: String) -> String {
        String(hash("\(channel.rawValue)|\(address)"), radix: 16)
    }

    public static func hash(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }
}
