import CRabbitMQ
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Owns one rabbitmq-c connection and runs on the connection's own thread: nothing here is touched from anywhere
/// else. It multiplexes the command queue (woken through an eventfd) with the socket, so publishes, acks, confirms
/// and deliveries all flow without blocking Swift's cooperative pool.
final class Worker {
    static let controlChannel: amqp_channel_t = 1
    static let publishChannel: amqp_channel_t = 2

    let core: ConnectionCore
    let configuration: AMQPConfiguration
    let logger: Logger
    let arena = CArena()
    /// C copies of the strings publishes repeat (exchanges, routing keys, content types), kept across calls.
    private let interned = CStringCache(capacity: 1024)
    private var recentExchange = RecentString()
    private var recentRoutingKey = RecentString()
    private var recentContentType = RecentString()

    private(set) var state: amqp_connection_state_t?
    /// Increases with every successful connect; deliveries of an earlier generation cannot be settled.
    private(set) var generation: UInt64 = 0
    /// Set when a C call reports the connection broken; the loop then tears down and reconnects.
    private var broken: String?
    private var shuttingDown = false
    private var shutdownWaiters: [CheckedContinuation<Void, Never>] = []

    /// Publisher confirms of the publishing channel.
    private var confirms = ConfirmTracker<CheckedContinuation<Void, any Error>>()

    // Consumers
    final class ConsumerState {
        let id: Int
        let queue: String
        let prefetch: UInt16
        let continuation: AsyncThrowingStream<[AMQPDelivery], any Error>.Continuation
        var channel: amqp_channel_t = 0
        /// Deliveries read in the current cycle, handed over together at its end (one stream yield per batch).
        var batch: [AMQPDelivery] = []
        init(
            id: Int, queue: String, prefetch: UInt16,
            continuation: AsyncThrowingStream<[AMQPDelivery], any Error>.Continuation
        ) {
            self.id = id
            self.queue = queue
            self.prefetch = prefetch
            self.continuation = continuation
        }
    }
    private var consumers: [Int: ConsumerState] = [:]
    private var consumersWithBatches: [ConsumerState] = []
    private var consumerByChannel: [amqp_channel_t: ConsumerState] = [:]
    private var freeChannels: [amqp_channel_t] = []
    private var nextChannel: amqp_channel_t = 3

    /// The method a message arrives with.
    private enum ContentMethod {
        case deliver(tag: UInt64, redelivered: Bool, exchange: String, routingKey: String)
        case returned(code: Int, text: String)
    }
    /// Messages being assembled per channel (method, then header, then body frames).
    private var assembler = ContentAssembler<ContentMethod>()

    /// Everything declared so far, declared again after a reconnect.
    var topology = AMQPTopology()

    private var lastSend = ContinuousClock.now
    private var lastReceive = ContinuousClock.now

    init(core: ConnectionCore, configuration: AMQPConfiguration, logger: Logger) {
        self.core = core
        self.configuration = configuration
        self.logger = logger
    }

    // MARK: - Thread entry

    /// Connects once, reports the outcome through `started`, then serves until shut down.
    func run(started: CheckedContinuation<Void, any Error>) {
        do {
            try connect()
        } catch {
            for command in core.markClosed() { ConnectionCore.fail(command, with: AMQPError(.closed)) }
            started.resume(throwing: error)
            return
        }
        started.resume()
        loop()
    }

    private func loop() {
        var backoff = configuration.reconnectInitial
        var nextAttempt = ContinuousClock.now
        while !shuttingDown {
            if state == nil {
                processCommands()
                if shuttingDown { break }
                let now = ContinuousClock.now
                if now < nextAttempt {
                    if core.prepareToSleep() {
                        sleep(seconds: Double((nextAttempt - now) / .milliseconds(1)) / 1000, socket: nil)
                    }
                    continue
                }
                do {
                    try connect()
                    backoff = configuration.reconnectInitial
                    logger.info("AMQP connection re-established", metadata: ["amqp.generation": "\(generation)"])
                } catch {
                    nextAttempt = .now + .milliseconds(Int(backoff * 1000 * Double.random(in: 0.8...1.2)))
                    backoff = min(backoff * 2, configuration.reconnectMaximum)
                    logger.debug("AMQP reconnect failed", metadata: ["error": "\(String(reflecting: error))"])
                }
                continue
            }
            processCommands()
            if broken == nil { readFrames() }
            if broken == nil { checkHeartbeats() }
            if checkBroken() {
                nextAttempt = .now + .milliseconds(Int(backoff * 1000))
                continue
            }
            if shuttingDown { continue }
            guard let state, core.prepareToSleep() else { continue }
            sleep(seconds: heartbeatTick, socket: amqp_get_sockfd(state))
        }
        finishShutdown()
    }

    private var heartbeatTick: Double {
        configuration.heartbeat > 0 ? max(0.05, Double(configuration.heartbeat) / 4) : 1
    }

    /// Waits in `poll` for the socket, a new command, or the timeout.
    private func sleep(seconds: Double, socket: Int32?) {
        var fds = [pollfd(fd: core.wakeFD, events: Int16(POLLIN), revents: 0)]
        if let socket, socket >= 0 { fds.append(pollfd(fd: socket, events: Int16(POLLIN), revents: 0)) }
        let rc = poll(&fds, nfds_t(fds.count), Int32(seconds * 1000))
        core.didWake()
        if rc > 0, fds.count > 1, fds[1].revents != 0 { lastReceive = .now }
    }

    private func checkBroken() -> Bool {
        guard let reason = broken else { return false }
        broken = nil
        logger.warning("AMQP connection lost", metadata: ["amqp.reason": "\(reason)"])
        teardown(reason: reason)
        return true
    }

    // MARK: - Connecting

    private func connect() throws {
        arena.reset()
        defer { arena.reset() }
        guard let conn = amqp_new_connection() else { throw AMQPError(.connectionFailed, detail: "out of memory") }
        guard let socket = amqp_tcp_socket_new(conn) else {
            amqp_destroy_connection(conn)
            throw AMQPError(.connectionFailed, detail: "could not create a socket")
        }
        var timeout = timeval(seconds: configuration.connectTimeout)
        let opened = amqp_socket_open_noblock(socket, configuration.host, Int32(configuration.port), &timeout)
        guard opened == AMQP_STATUS_OK.rawValue else {
            amqp_destroy_connection(conn)
            throw AMQPError(
                .connectionFailed,
                detail: "\(configuration.host):\(configuration.port): \(String(cString: amqp_error_string2(opened)))"
            )
        }
        _ = amqp_set_handshake_timeout(conn, &timeout)
        var rpcTimeout = timeval(seconds: configuration.rpcTimeout)
        _ = amqp_set_rpc_timeout(conn, &rpcTimeout)

        var clientProperties = arena.table([
            "connection_name": .string(configuration.connectionName),
            "product": "banditore",
            "capabilities": .table([
                "authentication_failure_close": true,
                "publisher_confirms": true,
                "consumer_cancel_notify": true,
                "connection.blocked": true,
            ]),
        ])
        let login = banditore_amqp_login_plain(
            conn, configuration.virtualHost, 0, 131_072, Int32(configuration.heartbeat), &clientProperties,
            configuration.user, configuration.password
        )
        if login.reply_type != AMQP_RESPONSE_NORMAL {
            let error = loginError(login)
            amqp_destroy_connection(conn)
            throw error
        }
        state = conn
        do {
            try openChannel(Self.controlChannel)
            try openChannel(Self.publishChannel)
            _ = amqp_confirm_select(conn, Self.publishChannel)
            try checkReply("confirm.select", channel: Self.publishChannel)
            try declareNow(topology)
            generation += 1
            confirms.restart()
            for consumer in consumers.values.sorted(by: { $0.id < $1.id }) {
                try startConsuming(consumer)
            }
        } catch {
            amqp_destroy_connection(conn)
            state = nil
            consumerByChannel.removeAll()
            throw error
        }
        lastSend = .now
        lastReceive = .now
        core.setConnected(true)
    }

    private func loginError(_ reply: amqp_rpc_reply_t) -> AMQPError {
        switch reply.reply_type {
        case AMQP_RESPONSE_SERVER_EXCEPTION where reply.reply.id == BANDITORE_CONNECTION_CLOSE:
            let close = reply.reply.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            let text = String(amqpBytes: close.reply_text)
            let code: AMQPError.Code = close.reply_code == 403 ? .authenticationFailed : .connectionFailed
            return AMQPError(code, replyCode: Int(close.reply_code), detail: text)
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            let text = String(cString: amqp_error_string2(reply.library_error))
            // Brokers without authentication_failure_close just drop the socket after a bad login.
            if reply.library_error == AMQP_STATUS_CONNECTION_CLOSED.rawValue
                || reply.library_error == AMQP_STATUS_SOCKET_ERROR.rawValue
            {
                return AMQPError(
                    .authenticationFailed, detail: "the broker closed the connection during login: \(text)")
            }
            return AMQPError(.connectionFailed, detail: text)
        default:
            return AMQPError(.connectionFailed, detail: "unexpected reply to login")
        }
    }

    private func openChannel(_ channel: amqp_channel_t) throws {
        _ = amqp_channel_open(state, channel)
        try checkReply("channel.open", channel: channel)
    }

    /// Turns the last RPC reply into an error. A closed channel is acknowledged and reopened, so that the next call
    /// on it works; a broken connection is flagged for the loop.
    @discardableResult
    func checkReply(_ what: String, channel: amqp_channel_t) throws -> amqp_rpc_reply_t {
        let reply = amqp_get_rpc_reply(state)
        // An answer proves the broker alive: the RPC read the socket itself (heartbeats included, which rabbitmq-c
        // swallows), so the idle watch would otherwise see nothing arrive on a connection that only does RPCs.
        if reply.reply_type != AMQP_RESPONSE_LIBRARY_EXCEPTION { lastReceive = .now }
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return reply
        case AMQP_RESPONSE_SERVER_EXCEPTION where reply.reply.id == BANDITORE_CHANNEL_CLOSE:
            let close = reply.reply.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            let text = String(amqpBytes: close.reply_text)
            var ok = amqp_channel_close_ok_t(dummy: 0)
            _ = amqp_send_method(state, channel, BANDITORE_CHANNEL_CLOSE_OK, &ok)
            if channel == Self.publishChannel || channel == Self.controlChannel {
                _ = amqp_channel_open(state, channel)
                if channel == Self.publishChannel { _ = amqp_confirm_select(state, channel) }
                if amqp_get_rpc_reply(state).reply_type != AMQP_RESPONSE_NORMAL {
                    broken = "could not reopen channel \(channel)"
                }
            }
            throw AMQPError(.channelClosed, replyCode: Int(close.reply_code), detail: "\(what): \(text)")
        case AMQP_RESPONSE_SERVER_EXCEPTION where reply.reply.id == BANDITORE_CONNECTION_CLOSE:
            let close = reply.reply.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            let text = String(amqpBytes: close.reply_text)
            var ok = amqp_connection_close_ok_t(dummy: 0)
            _ = amqp_send_method(state, 0, BANDITORE_CONNECTION_CLOSE_OK, &ok)
            broken = "broker closed the connection: \(close.reply_code) \(text)"
            throw AMQPError(.connectionLost, replyCode: Int(close.reply_code), detail: "\(what): \(text)")
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            let text = String(cString: amqp_error_string2(reply.library_error))
            broken = "\(what): \(text)"
            throw AMQPError(.connectionLost, detail: "\(what): \(text)")
        default:
            broken = "\(what): no reply"
            throw AMQPError(.protocolError, detail: "\(what): no reply")
        }
    }

    // MARK: - Consumers

    func addConsumer(_ consumer: ConsumerState) throws {
        consumers[consumer.id] = consumer
        do {
            try startConsuming(consumer)
        } catch {
            consumers[consumer.id] = nil
            throw error
        }
    }

    private func startConsuming(_ consumer: ConsumerState) throws {
        let channel =
            freeChannels.popLast()
            ?? {
                defer { nextChannel += 1 }
                return nextChannel
            }()
        try openChannel(channel)
        _ = amqp_basic_qos(state, channel, 0, consumer.prefetch, 0)
        try checkReply("basic.qos", channel: channel)
        defer { arena.reset() }
        _ = amqp_basic_consume(
            state, channel, arena.bytes(consumer.queue), arena.bytes("banditore-\(consumer.id)"), 0, 0, 0,
            amqp_empty_table
        )
        do {
            try checkReply("basic.consume \(consumer.queue)", channel: channel)
        } catch {
            if broken == nil { freeChannels.append(channel) }
            throw error
        }
        consumer.channel = channel
        consumerByChannel[channel] = consumer
    }

    private func cancelConsumer(id: Int) {
        guard let consumer = consumers.removeValue(forKey: id) else { return }
        consumer.continuation.finish()
        guard state != nil, consumerByChannel[consumer.channel] === consumer else { return }
        consumerByChannel[consumer.channel] = nil
        assembler.discard(channel: Int(consumer.channel))
        // Closing the channel returns its unacknowledged deliveries to the queue.
        _ = amqp_channel_close(state, consumer.channel, AMQP_REPLY_SUCCESS)
        if (try? checkReply("channel.close", channel: consumer.channel)) != nil {
            freeChannels.append(consumer.channel)
        }
    }

    // MARK: - Commands

    private func processCommands() {
        // Bounded, so that confirms and deliveries are read between large bursts of publishes.
        let commands = core.takeCommands(limit: 512)
        // A run of publishes and acks goes out in as few TCP segments as it fills, not a segment each: the socket
        // is corked meanwhile (RabbitMQ then spends about a quarter less CPU per confirmed publish in
        // scripts/bench/ingest), and uncorked before anything that waits for the broker's answer.
        var corked: Int32?
        func uncork() {
            if let fd = corked { _ = banditore_set_cork(fd, 0) }
            corked = nil
        }
        defer { uncork() }
        for command in commands {
            guard state != nil, broken == nil else {
                failWhileDisconnected(command)
                continue
            }
            switch command {
            case .publish, .settle:
                if corked == nil, commands.count > 1 {
                    let fd = amqp_get_sockfd(state)
                    if fd >= 0, banditore_set_cork(fd, 1) == 0 { corked = fd }
                }
            default:
                uncork()
            }
            switch command {
            case .publish(let request): publish(request)
            case .barrier(let continuation): resume(confirms.barrier(continuation))
            case .settle(let channel, let generation, let tag, let settlement):
                settle(channel: channel, generation: generation, tag: tag, settlement)
            case .perform(let work, _): work(self)
            case .cancelConsumer(let id): cancelConsumer(id: id)
            case .shutdown(let continuation):
                shutdownWaiters.append(continuation)
                shuttingDown = true
            }
        }
    }

    private func failWhileDisconnected(_ command: Command) {
        switch command {
        case .publish(let request):
            resume(confirms.notPublished(waiter: request.waiter, error: AMQPError(.notConnected)))
        case .barrier(let continuation):
            resume(confirms.completeBarrier(continuation))
        case .perform(_, let fail):
            fail(AMQPError(.notConnected))
        case .cancelConsumer(let id):
            consumers.removeValue(forKey: id)?.continuation.finish()
        case .shutdown(let continuation):
            shutdownWaiters.append(continuation)
            shuttingDown = true
        case .settle:
            break  // the broker redelivers what was unacknowledged
        }
    }

    private func publish(_ request: PublishRequest) {
        defer { arena.reset() }
        var properties = request.message.properties.cProperties(in: arena, interned: interned)
        let rc = request.message.body.withUnsafeBytes { body -> Int32 in
            let bodyBytes = amqp_bytes_t(len: body.count, bytes: UnsafeMutableRawPointer(mutating: body.baseAddress))
            return amqp_basic_publish(
                state, Self.publishChannel, interned.bytes(request.exchange), interned.bytes(request.routingKey),
                request.mandatory ? 1 : 0, 0, &properties, bodyBytes
            )
        }
        guard rc == AMQP_STATUS_OK.rawValue else {
            let text = String(cString: amqp_error_string2(rc))
            broken = "basic.publish: \(text)"
            resume(confirms.notPublished(waiter: request.waiter, error: AMQPError(.connectionLost, detail: text)))
            return
        }
        lastSend = .now
        confirms.published(messageID: request.message.properties.messageID, waiter: request.waiter)
    }

    private func settle(channel: amqp_channel_t, generation: UInt64, tag: UInt64, _ settlement: Settlement) {
        guard generation == self.generation, consumerByChannel[channel] != nil else { return }
        let rc: Int32
        switch settlement {
        case .ack(let multiple): rc = amqp_basic_ack(state, channel, tag, multiple ? 1 : 0)
        case .nack(let requeue, let multiple):
            rc = amqp_basic_nack(state, channel, tag, multiple ? 1 : 0, requeue ? 1 : 0)
        case .reject(let requeue): rc = amqp_basic_reject(state, channel, tag, requeue ? 1 : 0)
        }
        if rc != AMQP_STATUS_OK.rawValue {
            broken = "basic.ack: \(String(cString: amqp_error_string2(rc)))"
        } else {
            lastSend = .now
        }
    }

    // MARK: - Confirms

    /// Resumes the waiters a confirm step resolved and gives back the publish slots it freed.
    private func resume(_ outcome: ConfirmTracker<CheckedContinuation<Void, any Error>>.Outcome) {
        core.releaseSlots(outcome.released)
        for resolution in outcome.resolutions {
            if let error = resolution.error {
                resolution.waiter.resume(throwing: error)
            } else {
                resolution.waiter.resume()
            }
        }
    }

    // MARK: - Frames

    /// Reads what the socket has, then hands the deliveries to their consumers.
    private func readFrames() {
        var lingers = 0
        while true {
            let count = drainFrames()
            // A small batch wakes the consumer's thread for little: wait a moment for more of the same burst.
            guard count > 0, count < 2048, broken == nil, lingers < 5, (1..<256).contains(pendingDeliveries),
                banditore_wait_readable(amqp_get_sockfd(state), 100) > 0
            else { break }
            lingers += 1
        }
        flushDeliveries()
        amqp_maybe_release_buffers(state)
    }

    /// Handles the frames already received, up to 2,048 (so that queued commands, acks among them, are not
    /// starved by a flood of deliveries); returns how many.
    private func drainFrames() -> Int {
        var frame = amqp_frame_t()
        var zero = timeval(tv_sec: 0, tv_usec: 0)
        var count = 0
        while broken == nil, count < 2048 {
            let rc = amqp_simple_wait_frame_noblock(state, &frame, &zero)
            if rc == AMQP_STATUS_TIMEOUT.rawValue { break }
            guard rc == AMQP_STATUS_OK.rawValue else {
                broken = "reading: \(String(cString: amqp_error_string2(rc)))"
                break
            }
            count += 1
            handle(&frame)
        }
        if count > 0 { lastReceive = .now }
        return count
    }

    private var pendingDeliveries: Int { consumersWithBatches.reduce(0) { $0 + $1.batch.count } }

    private func flushDeliveries() {
        for consumer in consumersWithBatches where !consumer.batch.isEmpty {
            consumer.continuation.yield(consumer.batch)
            consumer.batch.removeAll(keepingCapacity: true)
        }
        consumersWithBatches.removeAll(keepingCapacity: true)
    }

    private func handle(_ frame: inout amqp_frame_t) {
        let channel = frame.channel
        switch Int32(frame.frame_type) {
        case AMQP_FRAME_METHOD:
            handleMethod(&frame, channel: channel)
        case AMQP_FRAME_HEADER:
            guard assembler.isAssembling(channel: Int(channel)) else { return }
            let properties = AMQPProperties(banditore_frame_properties(&frame).pointee, contentType: &recentContentType)
            let size = Int(banditore_frame_body_size(&frame))
            if let content = assembler.header(channel: Int(channel), bodySize: size, properties: properties) {
                complete(content, channel: channel)
            }
        case AMQP_FRAME_BODY:
            let fragment = banditore_frame_body_fragment(&frame)
            let bytes = UnsafeRawBufferPointer(start: fragment.bytes, count: fragment.bytes == nil ? 0 : fragment.len)
            if let content = assembler.body(channel: Int(channel), bytes) {
                complete(content, channel: channel)
            }
        default:
            break
        }
    }

    private func handleMethod(_ frame: inout amqp_frame_t, channel: amqp_channel_t) {
        let id = banditore_frame_method_id(&frame)
        let decoded = banditore_frame_method_decoded(&frame)!
        switch id {
        case BANDITORE_BASIC_ACK:
            let ack = decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            resume(confirms.confirmed(tag: ack.delivery_tag, multiple: ack.multiple != 0, ack: true))
        case BANDITORE_BASIC_NACK:
            let nack = decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            resume(confirms.confirmed(tag: nack.delivery_tag, multiple: nack.multiple != 0, ack: false))
        case BANDITORE_BASIC_DELIVER:
            let deliver = decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            assembler.start(
                .deliver(
                    tag: deliver.delivery_tag, redelivered: deliver.redelivered != 0,
                    exchange: recentExchange.string(for: deliver.exchange),
                    routingKey: recentRoutingKey.string(for: deliver.routing_key)
                ),
                channel: Int(channel)
            )
        case BANDITORE_BASIC_RETURN:
            let ret = decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            assembler.start(
                .returned(code: Int(ret.reply_code), text: String(amqpBytes: ret.reply_text)), channel: Int(channel)
            )
        case BANDITORE_CHANNEL_CLOSE:
            let close = decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            handleChannelClosed(channel, code: Int(close.reply_code), text: String(amqpBytes: close.reply_text))
        case BANDITORE_CONNECTION_CLOSE:
            let close = decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            var ok = amqp_connection_close_ok_t(dummy: 0)
            _ = amqp_send_method(state, 0, BANDITORE_CONNECTION_CLOSE_OK, &ok)
            broken = "broker closed the connection: \(close.reply_code) \(String(amqpBytes: close.reply_text))"
        case BANDITORE_BASIC_CANCEL:
            // The broker cancelled a consumer (its queue was deleted): end that consumer's sequence.
            if let consumer = consumerByChannel.removeValue(forKey: channel) {
                consumers[consumer.id] = nil
                consumer.continuation.finish(
                    throwing: AMQPError(
                        .channelClosed, detail: "the broker cancelled the consumer of \(consumer.queue)")
                )
                _ = amqp_channel_close(state, channel, AMQP_REPLY_SUCCESS)
                _ = try? checkReply("channel.close", channel: channel)
            }
        case BANDITORE_CONNECTION_BLOCKED:
            logger.warning("AMQP broker blocked publishing (resource alarm)")
        case BANDITORE_CONNECTION_UNBLOCKED:
            logger.info("AMQP broker unblocked publishing")
        default:
            logger.debug("AMQP unhandled method", metadata: ["amqp.method": "\(id)"])
        }
    }

    private func complete(_ content: ContentAssembler<ContentMethod>.Content, channel: amqp_channel_t) {
        switch content.method {
        case .deliver(let tag, let redelivered, let exchange, let routingKey):
            guard let consumer = consumerByChannel[channel] else { return }
            let delivery = AMQPDelivery(
                body: content.body, properties: content.properties, exchange: exchange, routingKey: routingKey,
                redelivered: redelivered, deliveryTag: tag,
                settler: Settler(core: core, channel: channel, generation: generation)
            )
            if consumer.batch.isEmpty { consumersWithBatches.append(consumer) }
            consumer.batch.append(delivery)
        case .returned(let code, let text):
            // The broker sends basic.return before the ack of the same message.
            if !confirms.returned(messageID: content.properties.messageID, code: code, text: text) {
                logger.warning(
                    "basic.return for an unknown message",
                    metadata: ["amqp.message_id": "\(content.properties.messageID ?? "-")"]
                )
            }
        }
    }

    private func handleChannelClosed(_ channel: amqp_channel_t, code: Int, text: String) {
        var ok = amqp_channel_close_ok_t(dummy: 0)
        _ = amqp_send_method(state, channel, BANDITORE_CHANNEL_CLOSE_OK, &ok)
        assembler.discard(channel: Int(channel))
        let error = AMQPError(.channelClosed, replyCode: code, detail: text)
        logger.warning(
            "AMQP channel closed by the broker",
            metadata: ["amqp.channel": "\(channel)", "amqp.reply": "\(code) \(text)"])
        if channel == Self.publishChannel {
            resume(confirms.fail(with: error))
            confirms.restart()
            do {
                try openChannel(channel)
                _ = amqp_confirm_select(state, channel)
                try checkReply("confirm.select", channel: channel)
            } catch {
                broken = broken ?? "could not reopen the publishing channel"
            }
        } else if channel == Self.controlChannel {
            if (try? openChannel(channel)) == nil { broken = broken ?? "could not reopen the control channel" }
        } else if let consumer = consumerByChannel.removeValue(forKey: channel) {
            do {
                try startConsuming(consumer)
            } catch {
                consumers[consumer.id] = nil
                consumer.continuation.finish(throwing: error)
            }
        }
    }

    // MARK: - Heartbeats

    private func checkHeartbeats() {
        guard configuration.heartbeat > 0 else { return }
        let interval = Duration.seconds(configuration.heartbeat)
        let now = ContinuousClock.now
        if now - lastReceive > interval * 2 {
            broken = "no data from the broker for \(configuration.heartbeat * 2) s (heartbeat timeout)"
            return
        }
        if now - lastSend > interval / 2 {
            if banditore_send_heartbeat(state) != AMQP_STATUS_OK.rawValue {
                broken = "could not send a heartbeat"
            }
            lastSend = now
        }
    }

    // MARK: - Teardown

    /// Drops the connection after a failure: unconfirmed publishes fail, consumers wait for the reconnect.
    private func teardown(reason: String) {
        core.setConnected(false)
        resume(confirms.fail(with: AMQPError(.connectionLost, detail: reason)))
        assembler.reset()
        for consumer in consumers.values { consumer.batch.removeAll() }
        consumersWithBatches.removeAll()
        consumerByChannel.removeAll()
        freeChannels.removeAll()
        nextChannel = 3
        if let state {
            amqp_destroy_connection(state)
        }
        state = nil
    }

    private func finishShutdown() {
        let leftovers = core.markClosed()
        if let state {
            // Give outstanding confirms a moment to arrive, so that a clean close loses nothing.
            let deadline = ContinuousClock.now + .seconds(2)
            while !confirms.isIdle, broken == nil, ContinuousClock.now < deadline {
                readFrames()
                if confirms.isIdle { break }
                var fds = [pollfd(fd: amqp_get_sockfd(state), events: Int16(POLLIN), revents: 0)]
                _ = poll(&fds, 1, 50)
            }
            for consumer in consumers.values { consumer.continuation.finish() }
            consumers.removeAll()
            resume(confirms.fail(with: AMQPError(.closed)))
            if broken == nil {
                _ = amqp_connection_close(state, AMQP_REPLY_SUCCESS)
            }
            amqp_destroy_connection(state)
            self.state = nil
        } else {
            for consumer in consumers.values { consumer.continuation.finish() }
            consumers.removeAll()
        }
        for command in leftovers { ConnectionCore.fail(command, with: AMQPError(.closed)) }
        resume(confirms.completeAllBarriers())
        for waiter in shutdownWaiters { waiter.resume() }
        shutdownWaiters.removeAll()
    }
}

/// What a passive declare tells about a queue.
public struct AMQPQueueInfo: Sendable, Hashable {
    public var name: String
    /// Messages ready for delivery (not counting unacknowledged ones).
    public var messageCount: Int
    public var consumerCount: Int
}

extension timeval {
    init(seconds: Double) {
        let whole = Int(seconds)
        self.init(tv_sec: whole, tv_usec: Int((seconds - Double(whole)) * 1_000_000))
    }
}
