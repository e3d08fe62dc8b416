import CRabbitMQ
import Logging

/// The topology's declarations on the control channel: exchanges, queues (a classic queue of an earlier version
/// replaced by its new type when it is empty and unused) and bindings; inspecting, purging and deleting.
extension Worker {
    /// Declares `topology` now and remembers it for reconnects.
    func declare(_ newTopology: AMQPTopology) throws {
        try declareNow(newTopology)
        topology = topology.merging(newTopology)
    }

    func declareNow(_ topology: AMQPTopology) throws {
        defer { arena.reset() }
        let ch = Self.controlChannel
        for exchange in topology.exchanges {
            _ = amqp_exchange_declare(
                state, ch, arena.bytes(exchange.name), arena.bytes(exchange.kind.rawValue), 0,
                exchange.durable ? 1 : 0, exchange.autoDelete ? 1 : 0, exchange.isInternal ? 1 : 0,
                arena.table(exchange.arguments)
            )
            try checkReply("exchange.declare \(exchange.name)", channel: ch)
        }
        for queue in topology.queues {
            do {
                try declareQueue(queue, channel: ch)
            } catch let error as AMQPError where Self.isClassicOfAnotherType(error) && queue.type != nil {
                try replaceQueue(queue, channel: ch, refused: error)
            }
        }
        for binding in topology.bindings {
            _ = amqp_queue_bind(
                state, ch, arena.bytes(binding.queue), arena.bytes(binding.exchange), arena.bytes(binding.routingKey),
                arena.table(binding.arguments)
            )
            try checkReply("queue.bind \(binding.queue)", channel: ch)
        }
    }

    private func declareQueue(_ queue: AMQPQueue, channel ch: amqp_channel_t) throws {
        _ = amqp_queue_declare(
            state, ch, arena.bytes(queue.name), 0, queue.durable ? 1 : 0, queue.exclusive ? 1 : 0,
            queue.autoDelete ? 1 : 0, arena.table(queue.allArguments)
        )
        try checkReply("queue.declare \(queue.name)", channel: ch)
    }

    /// Whether a declaration was refused because the queue exists as a classic queue and was declared with another
    /// type. Only a classic queue is replaced: the broker refuses `if-empty` and `if-unused` deletes of a quorum
    /// queue (closing the whole connection), and without them a message could arrive and be lost.
    static func isClassicOfAnotherType(_ error: AMQPError) -> Bool {
        guard error.replyCode == 406, let detail = error.detail, detail.contains("inequivalent arg 'x-queue-type'")
        else { return false }
        // "current is none": declared without a type, which is a classic queue.
        return detail.contains("but current is none") || detail.contains("but current is 'classic'")
    }

    /// `queue` exists as a classic queue (an earlier version declared it so). Empty and without consumers it is
    /// deleted and declared anew: the broker deletes it only then (`if-empty`, `if-unused`), and a message
    /// published in between is returned as unroutable (a mandatory publish fails; nothing is lost). Otherwise
    /// the declaration's error stands, with why the queue could not be replaced.
    private func replaceQueue(_ queue: AMQPQueue, channel ch: amqp_channel_t, refused: AMQPError) throws {
        func notReplaced(_ why: String) -> AMQPError {
            var error = refused
            error.detail = [refused.detail, "not replaced: \(why)"].compactMap { $0 }.joined(separator: "; ")
            return error
        }
        let info = try inspectQueue(queue.name)
        guard info.messageCount == 0, info.consumerCount == 0 else {
            throw notReplaced("\(info.messageCount) message(s) ready and \(info.consumerCount) consumer(s) on it")
        }
        do {
            try deleteQueueIfEmptyAndUnused(queue.name)
        } catch let error as AMQPError {
            throw notReplaced(error.detail ?? error.description)
        }
        logger.warning(
            "AMQP queue declared anew with its new type",
            metadata: ["amqp.queue": "\(queue.name)", "amqp.queue.type": "\(queue.type?.rawValue ?? "")"]
        )
        try declareQueue(queue, channel: ch)
    }

    /// A passive declare: the queue's ready message count and consumer count, exact at once.
    func inspectQueue(_ name: String) throws -> AMQPQueueInfo {
        defer { arena.reset() }
        let ok = amqp_queue_declare(state, Self.controlChannel, arena.bytes(name), 1, 0, 0, 0, amqp_empty_table)
        try checkReply("queue.declare passive \(name)", channel: Self.controlChannel)
        guard let ok else { throw AMQPError(.protocolError, detail: "queue.declare-ok missing") }
        return AMQPQueueInfo(
            name: name, messageCount: Int(ok.pointee.message_count),
            consumerCount: Int(ok.pointee.consumer_count))
    }

    func purgeQueue(_ name: String) throws -> Int {
        defer { arena.reset() }
        let ok = amqp_queue_purge(state, Self.controlChannel, arena.bytes(name))
        try checkReply("queue.purge \(name)", channel: Self.controlChannel)
        return Int(ok?.pointee.message_count ?? 0)
    }

    func deleteQueue(_ name: String) throws {
        defer { arena.reset() }
        _ = amqp_queue_delete(state, Self.controlChannel, arena.bytes(name), 0, 0)
        try checkReply("queue.delete \(name)", channel: Self.controlChannel)
        topology.queues.removeAll { $0.name == name }
        topology.bindings.removeAll { $0.queue == name }
    }

    /// Deletes a queue only if it holds no message and has no consumer; otherwise the broker refuses (406) and
    /// the queue stays.
    func deleteQueueIfEmptyAndUnused(_ name: String) throws {
        defer { arena.reset() }
        _ = amqp_queue_delete(state, Self.controlChannel, arena.bytes(name), 1, 1)
        try checkReply("queue.delete \(name) if empty and unused", channel: Self.controlChannel)
    }

    func deleteExchange(_ name: String) throws {
        defer { arena.reset() }
        _ = amqp_exchange_delete(state, Self.controlChannel, arena.bytes(name), 0)
        try checkReply("exchange.delete \(name)", channel: Self.controlChannel)
        topology.exchanges.removeAll { $0.name == name }
        topology.bindings.removeAll { $0.exchange == name }
    }
}
