import CRabbitMQ

import struct Foundation.Date

#if canImport(Glibc)
    import Glibc
#endif

/// Owns the C memory handed to rabbitmq-c for one call (`amqp_cstring_bytes` and tables keep the pointers they are
/// given, so the bytes must outlive the call). Used only on the connection's thread; `reset()` frees everything.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit { reset() }

    func reset() {
        for pointer in allocations { free(pointer) }
        allocations.removeAll(keepingCapacity: true)
    }

    private func allocate(_ size: Int) -> UnsafeMutableRawPointer {
        let pointer = malloc(max(size, 1))!
        allocations.append(pointer)
        return pointer
    }

    func bytes(_ string: String) -> amqp_bytes_t {
        var string = string
        return string.withUTF8 { bytes(UnsafeRawBufferPointer($0)) }
    }

    func bytes(_ buffer: UnsafeRawBufferPointer) -> amqp_bytes_t {
        guard buffer.count > 0, let base = buffer.baseAddress else { return amqp_bytes_t(len: 0, bytes: nil) }
        let pointer = allocate(buffer.count)
        pointer.copyMemory(from: base, byteCount: buffer.count)
        return amqp_bytes_t(len: buffer.count, bytes: pointer)
    }

    func cString(_ string: String) -> UnsafePointer<CChar> {
        let utf8 = Array(string.utf8CString)
        let pointer = allocate(utf8.count).bindMemory(to: CChar.self, capacity: utf8.count)
        utf8.withUnsafeBufferPointer { pointer.initialize(from: $0.baseAddress!, count: utf8.count) }
        return UnsafePointer(pointer)
    }

    func table(_ table: AMQPTable) -> amqp_table_t {
        guard !table.isEmpty else { return amqp_empty_table }
        let entries = allocate(MemoryLayout<amqp_table_entry_t>.stride * table.count)
            .bindMemory(to: amqp_table_entry_t.self, capacity: table.count)
        for (index, key) in table.keys.sorted().enumerated() {
            entries[index] = amqp_table_entry_t(key: bytes(key), value: value(table[key]!))
        }
        return amqp_table_t(num_entries: Int32(table.count), entries: entries)
    }

    func value(_ value: AMQPFieldValue) -> amqp_field_value_t {
        var field = amqp_field_value_t()
        switch value {
        case .string(let s):
            field.kind = kind(AMQP_FIELD_KIND_UTF8)
            field.value.bytes = bytes(s)
        case .bytes(let b):
            field.kind = kind(AMQP_FIELD_KIND_BYTES)
            field.value.bytes = b.withUnsafeBytes { bytes($0) }
        case .bool(let b):
            field.kind = kind(AMQP_FIELD_KIND_BOOLEAN)
            field.value.boolean = b ? 1 : 0
        case .int(let i):
            field.kind = kind(AMQP_FIELD_KIND_I64)
            field.value.i64 = i
        case .double(let d):
            field.kind = kind(AMQP_FIELD_KIND_F64)
            field.value.f64 = d
        case .timestamp(let date):
            field.kind = kind(AMQP_FIELD_KIND_TIMESTAMP)
            field.value.u64 = UInt64(max(0, date.timeIntervalSince1970))
        case .table(let t):
            field.kind = kind(AMQP_FIELD_KIND_TABLE)
            field.value.table = table(t)
        case .array(let values):
            field.kind = kind(AMQP_FIELD_KIND_ARRAY)
            let entries = allocate(MemoryLayout<amqp_field_value_t>.stride * max(values.count, 1))
                .bindMemory(to: amqp_field_value_t.self, capacity: max(values.count, 1))
            for (index, element) in values.enumerated() { entries[index] = self.value(element) }
            field.value.array = amqp_array_t(num_entries: Int32(values.count), entries: entries)
        case .void:
            field.kind = kind(AMQP_FIELD_KIND_VOID)
        }
        return field
    }

    private func kind(_ kind: amqp_field_value_kind_t) -> UInt8 { UInt8(truncatingIfNeeded: kind.rawValue) }
}

/// Long-lived C copies of strings that recur (exchange names, routing keys, content types), so that a publish
/// does not allocate them each time. Bounded: when full it is emptied and refilled. Used on one thread only.
final class CStringCache {
    private var entries: [String: amqp_bytes_t] = [:]
    private let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    deinit { clear() }

    func bytes(_ string: String) -> amqp_bytes_t {
        if let cached = entries[string] { return cached }
        if entries.count >= capacity { clear() }
        var copy = string
        let bytes = copy.withUTF8 { buffer -> amqp_bytes_t in
            guard buffer.count > 0 else { return amqp_bytes_t(len: 0, bytes: nil) }
            let pointer = malloc(buffer.count)!
            pointer.copyMemory(from: buffer.baseAddress!, byteCount: buffer.count)
            return amqp_bytes_t(len: buffer.count, bytes: pointer)
        }
        entries[string] = bytes
        return bytes
    }

    private func clear() {
        for bytes in entries.values { free(bytes.bytes) }
        entries.removeAll()
    }
}

// MARK: - Reading C values into Swift

/// Remembers the last string read for one field (exchange, routing key, content type…), so that a run of
/// deliveries carrying the same bytes shares one Swift string instead of allocating each time.
struct RecentString {
    private var bytes: [UInt8] = []
    private var string = ""

    mutating func string(for value: amqp_bytes_t) -> String {
        guard value.len > 0, let base = value.bytes else { return "" }
        let incoming = UnsafeRawBufferPointer(start: base, count: value.len)
        if bytes.count == value.len, bytes.withUnsafeBytes({ memcmp($0.baseAddress!, base, value.len) == 0 }) {
            return string
        }
        bytes = Array(incoming)
        string = String(decoding: incoming, as: UTF8.self)
        return string
    }
}

extension String {
    init(amqpBytes bytes: amqp_bytes_t) {
        guard bytes.len > 0, let base = bytes.bytes else {
            self = ""
            return
        }
        self = String(decoding: UnsafeRawBufferPointer(start: base, count: bytes.len), as: UTF8.self)
    }
}

extension Array where Element == UInt8 {
    init(amqpBytes bytes: amqp_bytes_t) {
        guard bytes.len > 0, let base = bytes.bytes else {
            self = []
            return
        }
        self = Array(UnsafeRawBufferPointer(start: base, count: bytes.len))
    }
}

extension AMQPFieldValue {
    init(_ field: amqp_field_value_t) {
        func k(_ kind: amqp_field_value_kind_t) -> UInt8 { UInt8(truncatingIfNeeded: kind.rawValue) }
        switch field.kind {
        case k(AMQP_FIELD_KIND_UTF8): self = .string(String(amqpBytes: field.value.bytes))
        case k(AMQP_FIELD_KIND_BYTES): self = .bytes([UInt8](amqpBytes: field.value.bytes))
        case k(AMQP_FIELD_KIND_BOOLEAN): self = .bool(field.value.boolean != 0)
        case k(AMQP_FIELD_KIND_I8): self = .int(Int64(field.value.i8))
        case k(AMQP_FIELD_KIND_U8): self = .int(Int64(field.value.u8))
        case k(AMQP_FIELD_KIND_I16): self = .int(Int64(field.value.i16))
        case k(AMQP_FIELD_KIND_U16): self = .int(Int64(field.value.u16))
        case k(AMQP_FIELD_KIND_I32): self = .int(Int64(field.value.i32))
        case k(AMQP_FIELD_KIND_U32): self = .int(Int64(field.value.u32))
        case k(AMQP_FIELD_KIND_I64): self = .int(field.value.i64)
        case k(AMQP_FIELD_KIND_U64): self = .int(Int64(bitPattern: field.value.u64))
        case k(AMQP_FIELD_KIND_F32): self = .double(Double(field.value.f32))
        case k(AMQP_FIELD_KIND_F64): self = .double(field.value.f64)
        case k(AMQP_FIELD_KIND_DECIMAL):
            let d = field.value.decimal
            self = .double(Double(d.value) / pow10(Int(d.decimals)))
        case k(AMQP_FIELD_KIND_TIMESTAMP):
            self = .timestamp(Date(timeIntervalSince1970: Double(field.value.u64)))
        case k(AMQP_FIELD_KIND_TABLE): self = .table(AMQPTable(field.value.table))
        case k(AMQP_FIELD_KIND_ARRAY):
            let array = field.value.array
            var values: [AMQPFieldValue] = []
            for index in 0..<Int(array.num_entries) { values.append(AMQPFieldValue(array.entries[index])) }
            self = .array(values)
        default: self = .void
        }
    }
}

private func pow10(_ n: Int) -> Double {
    var result = 1.0
    for _ in 0..<n { result *= 10 }
    return result
}

extension Dictionary where Key == String, Value == AMQPFieldValue {
    init(_ table: amqp_table_t) {
        self.init()
        guard table.num_entries > 0, let entries = table.entries else { return }
        for index in 0..<Int(table.num_entries) {
            let entry = entries[index]
            self[String(amqpBytes: entry.key)] = AMQPFieldValue(entry.value)
        }
    }
}

extension AMQPProperties {
    /// Reads the properties of a content header frame; the content type through `contentType`, which repeats.
    init(_ p: amqp_basic_properties_t, contentType: inout RecentString) {
        func has(_ flag: UInt16) -> Bool { p._flags & amqp_flags_t(flag) != 0 }
        self.init(
            contentType: has(BANDITORE_FLAG_CONTENT_TYPE) ? contentType.string(for: p.content_type) : nil,
            contentEncoding: has(BANDITORE_FLAG_CONTENT_ENCODING) ? String(amqpBytes: p.content_encoding) : nil,
            headers: has(BANDITORE_FLAG_HEADERS) ? AMQPTable(p.headers) : [:],
            persistent: has(BANDITORE_FLAG_DELIVERY_MODE) ? p.delivery_mode == 2 : false,
            priority: has(BANDITORE_FLAG_PRIORITY) ? p.priority : nil,
            correlationID: has(BANDITORE_FLAG_CORRELATION_ID) ? String(amqpBytes: p.correlation_id) : nil,
            replyTo: has(BANDITORE_FLAG_REPLY_TO) ? String(amqpBytes: p.reply_to) : nil,
            expiration: has(BANDITORE_FLAG_EXPIRATION) ? String(amqpBytes: p.expiration) : nil,
            messageID: has(BANDITORE_FLAG_MESSAGE_ID) ? String(amqpBytes: p.message_id) : nil,
            timestamp: has(BANDITORE_FLAG_TIMESTAMP) ? Date(timeIntervalSince1970: Double(p.timestamp)) : nil,
            type: has(BANDITORE_FLAG_TYPE) ? String(amqpBytes: p.type) : nil,
            appID: has(BANDITORE_FLAG_APP_ID) ? String(amqpBytes: p.app_id) : nil
        )
    }

    /// Writes the properties for a publish: per-message strings in `arena`, repeated ones from `interned`.
    func cProperties(in arena: CArena, interned: CStringCache) -> amqp_basic_properties_t {
        var p = amqp_basic_properties_t()
        var flags: UInt16 = BANDITORE_FLAG_DELIVERY_MODE
        p.delivery_mode = persistent ? 2 : 1
        if let contentType {
            flags |= BANDITORE_FLAG_CONTENT_TYPE
            p.content_type = interned.bytes(contentType)
        }
        if let contentEncoding {
            flags |= BANDITORE_FLAG_CONTENT_ENCODING
            p.content_encoding = arena.bytes(contentEncoding)
        }
        if !headers.isEmpty {
            flags |= BANDITORE_FLAG_HEADERS
            p.headers = arena.table(headers)
        }
        if let priority {
            flags |= BANDITORE_FLAG_PRIORITY
            p.priority = priority
        }
        if let correlationID {
            flags |= BANDITORE_FLAG_CORRELATION_ID
            p.correlation_id = arena.bytes(correlationID)
        }
        if let replyTo {
            flags |= BANDITORE_FLAG_REPLY_TO
            p.reply_to = arena.bytes(replyTo)
        }
        if let expiration {
            flags |= BANDITORE_FLAG_EXPIRATION
            p.expiration = arena.bytes(expiration)
        }
        if let messageID {
            flags |= BANDITORE_FLAG_MESSAGE_ID
            p.message_id = arena.bytes(messageID)
        }
        if let timestamp {
            flags |= BANDITORE_FLAG_TIMESTAMP
            p.timestamp = UInt64(max(0, timestamp.timeIntervalSince1970))
        }
        if let type {
            flags |= BANDITORE_FLAG_TYPE
            p.type = interned.bytes(type)
        }
        if let appID {
            flags |= BANDITORE_FLAG_APP_ID
            p.app_id = arena.bytes(appID)
        }
        p._flags = amqp_flags_t(flags)
        return p
    }
}
