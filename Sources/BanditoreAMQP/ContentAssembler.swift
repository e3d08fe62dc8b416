/// Assembles the messages that arrive as frames, per channel: a method (`basic.deliver`, `basic.return`), then a
/// header with the body's size and the properties, then body frames until the size is reached. Pure: the connection
/// decodes the C frames and feeds them here, so the assembly is tested without a broker.
struct ContentAssembler<Method> {
    struct Content {
        var method: Method
        var properties = AMQPProperties(persistent: false)
        var body: [UInt8] = []
    }

    private struct Partial {
        var content: Content
        var expected = 0
    }

    /// Indexed by channel number (channels are small integers), mutated in place: no hashing or copies per frame.
    private var partial: [Partial?] = Array(repeating: nil, count: 64)

    /// Whether a message is being assembled on the channel (a header or body frame for it is expected).
    func isAssembling(channel: Int) -> Bool { channel < partial.count && partial[channel] != nil }

    /// A content-bearing method: a message starts on the channel (one left unfinished there is dropped).
    mutating func start(_ method: Method, channel: Int) {
        if channel >= partial.count { partial += Array(repeating: nil, count: channel + 1 - partial.count) }
        partial[channel] = Partial(content: Content(method: method))
    }

    /// The header: the message when its body is empty, else nil until the body has arrived. Ignored (nil) on a
    /// channel with no message started.
    mutating func header(channel: Int, bodySize: Int, properties: AMQPProperties) -> Content? {
        guard isAssembling(channel: channel) else { return nil }
        partial[channel]!.content.properties = properties
        partial[channel]!.expected = bodySize
        if bodySize == 0 { return partial[channel].take()!.content }
        partial[channel]!.content.body.reserveCapacity(bodySize)
        return nil
    }

    /// A body frame: the message once its body is complete, else nil. Ignored (nil) on a channel with no message.
    mutating func body(channel: Int, _ fragment: UnsafeRawBufferPointer) -> Content? {
        guard isAssembling(channel: channel) else { return nil }
        if !fragment.isEmpty { partial[channel]!.content.body.append(contentsOf: fragment) }
        guard partial[channel]!.content.body.count >= partial[channel]!.expected else { return nil }
        return partial[channel].take()!.content
    }

    /// The channel closed: what it was assembling is dropped.
    mutating func discard(channel: Int) {
        if channel < partial.count { partial[channel] = nil }
    }

    /// The connection is gone: everything being assembled is dropped.
    mutating func reset() {
        for index in partial.indices { partial[index] = nil }
    }
}
