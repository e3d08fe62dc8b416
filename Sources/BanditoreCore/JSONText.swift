/// Writes small JSON bodies by hand: providers' requests and the simulator's answers are a few fixed keys, and
/// JSONSerialization (dynamic casts over `[String: Any]`) cost more than the rest of a send.
public enum JSONText {
    /// `value` as a quoted JSON string.
    public static func quote(_ value: String) -> String {
        if !needsEscaping(value) { return "\"" + value + "\"" }
        var out = "\""
        out.reserveCapacity(value.utf8.count + 2)
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                out +=
                    "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count)
                    + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

extension JSONText {
    /// Whether `value` holds a character a JSON string must escape (a control character, `"` or `\`).
    static func needsEscaping(_ value: String) -> Bool {
        value.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") })
    }

    /// Appends `value` as a quoted JSON string.
    public static func write(_ value: String, to out: inout [UInt8]) {
        if needsEscaping(value) {
            out += quote(value).utf8
        } else {
            out.append(UInt8(ascii: "\""))
            out += value.utf8
            out.append(UInt8(ascii: "\""))
        }
    }
}
