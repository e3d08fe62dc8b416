import BanditoreCore
import Foundation
import Testing

/// Our JSON reader (BanditoreCore), checked against Foundation's on the same documents.
struct JSONValueTests {
    @Test func readsWhatFoundationReads() throws {
        let document = #"""
            {"chat_id": -1001234567890123, "text": "Sciopero \"scuolabus\"\n\u00e8 \ud83d\ude8c 中文\/x", "ok": true,
             "none": null, "list": [1, 2.5, -3e2, {"a": []}], "nested": {"k": {"v": "w"}}, "dup": 1, "dup": 2}
            """#
        let value = try #require(JSONValue.parse(Array(document.utf8)))
        let foundation = try #require(try JSONSerialization.jsonObject(with: Data(document.utf8)) as? [String: Any])
        #expect(value["chat_id"]?.int64 == -1_001_234_567_890_123)
        #expect(value["text"]?.string == foundation["text"] as? String)
        #expect(value["text"]?.string == "Sciopero \"scuolabus\"\nè 🚌 中文/x")
        #expect(value["ok"]?.bool == true)
        if case .null? = value["none"] {} else { Issue.record("null not read") }
        #expect(value["list"]?.array?.count == 4)
        #expect(value["nested"]?["k"]?["v"]?.string == "w")
        #expect(value["dup"]?.int64 == 2)
        #expect(value["missing"] == nil)
    }

    @Test(arguments: [
        "", "{", "{\"a\":}", "{\"a\" 1}", "[1,]", "{\"a\":1,}", "\"unterminated", "{\"a\":tru}", "nul", "01x",
        "{\"a\":\"\\q\"}", "{\"a\":\"\\ud83d\"}", "{\"a\":\"tab\there\"}", "{} trailing",
        "[" + String(repeating: "[", count: 100),
    ])
    func refusesMalformedDocuments(_ text: String) {
        #expect(JSONValue.parse(Array(text.utf8)) == nil)
    }
}
