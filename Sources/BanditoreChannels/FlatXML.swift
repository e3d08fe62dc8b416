/// Reads a WeChat push, `<xml><Name>value</Name>…</xml>`, into a dictionary of the root's children; anything that
/// is not well-formed XML is an error, never a crash.
///
/// A reader of our own over the bytes, not Foundation's `XMLParser`: that one crashed the process on an element
/// name that is not UTF-8 (`<xml><S\u{FB}>`, found by the webhook fuzzer), and a crash of ingest is a webhook
/// lost for every citizen writing at that moment. What WeChat sends is a small subset of XML: an optional
/// `<?xml …?>` declaration, elements without namespaces, text with the five predefined entities and character
/// references, CDATA sections, comments. Document type and entity declarations are refused outright (no entity
/// expansion, no external entities); so is any other entity, a name or text that is not UTF-8, and nesting deeper
/// than 32. A child's value is its text and CDATA; what its own children hold is skipped.
enum FlatXML {
    static let maxDepth = 32

    static func parse(_ bytes: [UInt8]) throws -> [String: String] {
        var reader = Reader(bytes: bytes)
        return try reader.document()
    }

    private struct Reader {
        let bytes: [UInt8]
        var at = 0

        init(bytes: [UInt8]) {
            self.bytes = bytes
        }

        private func fail(_ why: String) -> WebhookDecodingError {
            WebhookDecodingError("not a WeChat XML message: \(why) at byte \(at)")
        }

        private func starts(with prefix: String) -> Bool {
            let utf8 = Array(prefix.utf8)
            return bytes.count - at >= utf8.count && bytes[at..<(at + utf8.count)].elementsEqual(utf8)
        }

        private mutating func skipSpace() {
            while at < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[at]) { at += 1 }
        }

        /// Moves past the next `terminator`, returning what came before it.
        private mutating func until(_ terminator: String, what: String) throws -> ArraySlice<UInt8> {
            let end = Array(terminator.utf8)
            var i = at
            while i + end.count <= bytes.count {
                if bytes[i..<(i + end.count)].elementsEqual(end) {
                    let found = bytes[at..<i]
                    at = i + end.count
                    return found
                }
                i += 1
            }
            throw fail("unterminated \(what)")
        }

        /// Moves past a comment if one starts here; says whether one did.
        private mutating func skipComment() throws -> Bool {
            guard starts(with: "<!--") else { return false }
            at += 4
            _ = try until("-->", what: "comment")
            return true
        }

        /// Comments and whitespace between elements.
        private mutating func skipMisc() throws {
            repeat { skipSpace() } while try skipComment()
        }

        mutating func document() throws -> [String: String] {
            if starts(with: "\u{FEFF}") { at += 3 }
            if starts(with: "<?xml") {
                _ = try until("?>", what: "XML declaration")
            }
            try skipMisc()
            if starts(with: "<!") { throw fail("a document type or entity declaration is not accepted") }
            guard at < bytes.count, bytes[at] == UInt8(ascii: "<") else { throw fail("no root element") }
            let (root, empty) = try startTag()
            guard root == "xml" else { throw fail("the root is <\(root)>, not <xml>") }
            var fields: [String: String] = [:]
            if !empty {
                try children(of: root, into: &fields)
            }
            try skipMisc()
            guard at == bytes.count else { throw fail("content after the root element") }
            return fields
        }

        /// The root's content up to its end tag: each child's text and CDATA become its field.
        private mutating func children(of root: String, into fields: inout [String: String]) throws {
            while true {
                _ = try text()  // text directly under the root is not a field
                if starts(with: "</") {
                    try endTag(root)
                    return
                }
                let (name, empty) = try startTag()
                fields[name] = empty ? "" : try value(of: name)
            }
        }

        /// A child's value, up to its end tag; elements inside it are read and skipped.
        private mutating func value(of name: String) throws -> String {
            var value = try text()
            var open: [String] = [name]
            while true {
                if starts(with: "</") {
                    try endTag(open.removeLast())
                    if open.isEmpty { return value }
                } else {
                    let (inner, empty) = try startTag()
                    if !empty {
                        open.append(inner)
                        guard open.count < FlatXML.maxDepth else { throw fail("elements nested too deep") }
                    }
                }
                let more = try text()
                if open.count == 1 { value += more }
            }
        }

        /// `<Name attribute="…" …>` or `<Name …/>`; returns the name and whether the element is empty.
        private mutating func startTag() throws -> (String, Bool) {
            at += 1  // "<"
            let name = try self.name()
            while true {
                let before = at
                skipSpace()
                guard at < bytes.count else { throw fail("unterminated tag <\(name)>") }
                if bytes[at] == UInt8(ascii: ">") {
                    at += 1
                    return (name, false)
                }
                if starts(with: "/>") {
                    at += 2
                    return (name, true)
                }
                guard at > before else { throw fail("no space before an attribute of <\(name)>") }
                _ = try self.name()
                skipSpace()
                guard at < bytes.count, bytes[at] == UInt8(ascii: "=") else {
                    throw fail("an attribute without a value")
                }
                at += 1
                skipSpace()
                guard at < bytes.count, bytes[at] == UInt8(ascii: "\"") || bytes[at] == UInt8(ascii: "'") else {
                    throw fail("an attribute value without quotes")
                }
                let quote = bytes[at]
                at += 1
                let raw = try until(String(UnicodeScalar(quote)), what: "attribute value")
                guard !raw.contains(UInt8(ascii: "<")) else { throw fail("'<' in an attribute value") }
                _ = try decodeText(raw)
            }
        }

        private mutating func endTag(_ name: String) throws {
            at += 2  // "</"
            let closing = try self.name()
            skipSpace()
            guard at < bytes.count, bytes[at] == UInt8(ascii: ">") else {
                throw fail("unterminated end tag </\(closing)>")
            }
            at += 1
            guard closing == name else { throw fail("</\(closing)> closes <\(name)>") }
        }

        /// A name of ASCII letters, digits, `_`, `-` and `.`, starting with a letter or `_` (WeChat's element names;
        /// no namespaces).
        private mutating func name() throws -> String {
            let start = at
            while at < bytes.count {
                let byte = bytes[at]
                let letter =
                    (byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "z")
                    || byte == UInt8(ascii: "_")
                let other =
                    byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") || byte == UInt8(ascii: "-")
                    || byte == UInt8(ascii: ".")
                guard letter || (at > start && other) else { break }
                at += 1
            }
            guard at > start else { throw fail("not a name") }
            return String(decoding: bytes[start..<at], as: UTF8.self)
        }

        /// Text, CDATA sections and comments up to the next tag.
        private mutating func text() throws -> String {
            var out = ""
            while at < bytes.count {
                if starts(with: "<![CDATA[") {
                    at += 9
                    out += try utf8(try until("]]>", what: "CDATA section"))
                } else if try skipComment() {
                    continue
                } else if starts(with: "<!") || starts(with: "<?") {
                    throw fail("a declaration or processing instruction inside the document")
                } else if bytes[at] == UInt8(ascii: "<") {
                    return out
                } else {
                    let start = at
                    while at < bytes.count, bytes[at] != UInt8(ascii: "<") { at += 1 }
                    let raw = bytes[start..<at]
                    if raw.firstRange(of: Array("]]>".utf8)) != nil { throw fail("']]>' in text") }
                    out += try decodeText(raw)
                }
            }
            throw fail("the document ends inside an element")
        }

        private func utf8(_ raw: ArraySlice<UInt8>) throws -> String {
            guard let text = String(validating: raw, as: UTF8.self) else { throw fail("text that is not UTF-8") }
            return text
        }

        /// Text with its references replaced: `&lt;` `&gt;` `&amp;` `&quot;` `&apos;`, `&#…;` and `&#x…;`.
        private func decodeText(_ raw: ArraySlice<UInt8>) throws -> String {
            let text = try utf8(raw)
            guard text.contains("&") else { return text }
            var out = ""
            var rest = Substring(text)
            while let amp = rest.firstIndex(of: "&") {
                out += rest[..<amp]
                guard let semicolon = rest[amp...].firstIndex(of: ";") else { throw fail("an unterminated reference") }
                let reference = rest[rest.index(after: amp)..<semicolon]
                switch reference {
                case "lt": out += "<"
                case "gt": out += ">"
                case "amp": out += "&"
                case "quot": out += "\""
                case "apos": out += "'"
                default:
                    let hex = reference.hasPrefix("#x")
                    guard reference.hasPrefix("#"), reference.count > (hex ? 2 : 1), reference.count <= 10,
                        let code = UInt32(reference.dropFirst(hex ? 2 : 1), radix: hex ? 16 : 10),
                        let scalar = Unicode.Scalar(code), code != 0
                    else { throw fail("the reference &\(reference); is not accepted") }
                    out.unicodeScalars.append(scalar)
                }
                rest = rest[rest.index(after: semicolon)...]
            }
            return out + rest
        }
    }
}
