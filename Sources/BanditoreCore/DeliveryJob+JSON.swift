import Foundation

extension DeliveryJob {
    /// The job as JSON: the document `JSONEncoder` makes of it (any `JSONDecoder` reads it back), written by hand.
    /// A bulletin to a million subscribers is two thousand jobs of 500 recipients, and `JSONEncoder`'s generic path
    /// was most of the composer's work.
    public func json() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512 + recipients.count * 96)
        out += #"{"id":"#.utf8
        JSONText.write(id, to: &out)
        if let bulletinID {
            out += #","bulletinID":"#.utf8
            JSONText.write(bulletinID.uuidString, to: &out)
        }
        out += #","channel":"#.utf8
        JSONText.write(channel.rawValue, to: &out)
        out += (urgent ? #","urgent":true"# : #","urgent":false"#).utf8
        out += #","attempt":"#.utf8
        out += String(attempt).utf8
        // A few languages: the encoder's own output.
        out += #","messages":"#.utf8
        out += (try? JSONEncoder().encode(messages)) ?? Data("{}".utf8)
        out += #","recipients":["#.utf8
        for (index, recipient) in recipients.enumerated() {
            out += (index == 0 ? "{" : ",{").utf8
            if let deliveryID = recipient.deliveryID {
                out += #""deliveryID":"#.utf8
                out += String(deliveryID).utf8
                out.append(UInt8(ascii: ","))
            }
            if let subscriberID = recipient.subscriberID {
                out += #""subscriberID":"#.utf8
                out += String(subscriberID).utf8
                out.append(UInt8(ascii: ","))
            }
            out += #""address":"#.utf8
            JSONText.write(recipient.address, to: &out)
            out += #","language":"#.utf8
            JSONText.write(recipient.language.rawValue, to: &out)
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "]"))
        if let correlationID {
            out += #","correlationID":"#.utf8
            JSONText.write(correlationID, to: &out)
        }
        if let lastError {
            out += #","lastError":"#.utf8
            JSONText.write(lastError, to: &out)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }
}
