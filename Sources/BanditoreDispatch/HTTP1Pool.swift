import BanditoreConcurrency
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// Keep-alive HTTP/1.1 connections to one origin (`http` or `https`), at most `maxConnections` open, one exchange
/// at a time on each (no pipelining: providers' front ends do not all honour it).
///
/// A dispatcher talks to one host per channel and spends most of its time waiting for it; this pool does only what
/// that needs, on SwiftNIO's event loops: lease a connection (an idle one, a new one under the cap, or wait for
/// one), write the request, collect the answer up to a size cap, give the connection back (or drop it when the
/// server asked to close, failed or timed out).
///
/// A kept-alive connection can be closed by the server just as a request is written on it. A request that finds
/// its connection closed before it was written is tried once more on a new connection; so is an idempotent one
/// (GET) whose reused connection closed before any byte of the answer. A POST in that case is not: the provider
/// may have acted on it, and the dispatcher's own retry decides. Connections idle for longer than `maxIdle` (less
/// than providers' keep-alive timeouts) are closed rather than reused, which keeps that race rare.
final class HTTP1Pool: Sendable {
    struct Origin: Sendable, Hashable {
        var tls: Bool
        var host: String
        var port: Int
    }

    struct Response: Sendable {
        var status: Int
        var body: [UInt8]
    }

    private enum Lease {
        case connection(any Channel)
        case create
    }

    private struct State {
        var idle: [(channel: any Channel, since: NIODeadline)] = []
        var open = 0
        var waiters = WaiterQueue<Lease>()
        var closed = false
    }

    let origin: Origin
    private let maxConnections: Int
    private let connectTimeout: TimeAmount
    private let maxResponseBytes: Int
    private let maxIdle: TimeAmount
    private let group: any EventLoopGroup
    private let ssl: NIOSSLContext?
    private let hostHeader: String
    private let state = Mutex(State())

    init(
        origin: Origin, maxConnections: Int, connectTimeout: TimeAmount = .seconds(5),
        maxResponseBytes: Int = 1 << 20, maxIdle: TimeAmount = .seconds(20),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        tlsConfiguration: TLSConfiguration = .makeClientConfiguration()
    ) throws {
        self.origin = origin
        self.maxIdle = maxIdle
        self.maxConnections = max(1, maxConnections)
        self.connectTimeout = connectTimeout
        self.maxResponseBytes = maxResponseBytes
        self.group = group
        self.ssl = origin.tls ? try NIOSSLContext(configuration: tlsConfiguration) : nil
        let defaultPort = origin.tls ? 443 : 80
        self.hostHeader = origin.port == defaultPort ? origin.host : "\(origin.host):\(origin.port)"
    }

    /// Performs one exchange; throws ``HTTP1PoolError`` when the origin cannot be reached, closes the connection
    /// mid-answer, answers more than the cap, or does not answer within `timeout`.
    func execute(
        method: HTTPMethod, path: String, headers: [String: String], body: [UInt8]?, timeout: TimeAmount
    ) async throws -> Response {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.reserveCapacity(headers.count + 3)
        head.headers.add(name: "host", value: hostHeader)
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        if let body { head.headers.add(name: "content-length", value: String(body.count)) }
        guard Self.isWellFormed(head) else { throw HTTP1PoolError.malformedRequest }
        let deadline = NIODeadline.now() + timeout
        var attempt = 0
        while true {
            attempt += 1
            let (channel, reused) = try await lease(deadline: deadline)
            guard deadline > .now() else {
                // Waited too long for a connection: give it back unused rather than send a request already late
                // (its answer would be thrown away while the provider acts on it).
                release(channel, reusable: true)
                throw HTTP1PoolError.notSentInTime
            }
            let answer = HTTP1Exchange.Completion(channel.eventLoop.makePromise(of: HTTP1Exchange.Answer.self))
            let exchange = HTTP1Exchange(
                head: head, body: body.map { channel.allocator.buffer(bytes: $0) }, deadline: deadline,
                maxResponseBytes: maxResponseBytes, completion: answer
            )
            // A channel closed before the write reaches the handler fails the write here, not in the handler.
            let written = channel.eventLoop.makePromise(of: Void.self)
            written.futureResult.whenFailure { _ in answer.complete(.failure(HTTP1PoolError.closedBeforeWriting)) }
            channel.writeAndFlush(exchange, promise: written)
            do {
                let answer = try await answer.promise.futureResult.get()
                release(channel, reusable: answer.keepAlive)
                return Response(status: answer.status, body: answer.body)
            } catch let error as HTTP1PoolError {
                release(channel, reusable: false)
                // A kept-alive connection the server closed meanwhile: once more, afresh, when that cannot repeat
                // an effect.
                if reused, attempt == 1 {
                    switch error {
                    case .closedBeforeWriting: continue
                    case .closedBeforeAnswer where method == .GET || method == .HEAD: continue
                    default: break
                    }
                }
                throw error
            } catch {
                release(channel, reusable: false)
                throw error
            }
        }
    }

    /// A request line and headers that cannot smuggle another request: the target is printable ASCII without
    /// spaces, names are tokens, values have no line break or NUL. Checked here in one pass over the bytes instead of
    /// by NIO's outbound validator (a handler of its own on every write, a tenth of a dispatcher's event-loop time).
    static func isWellFormed(_ head: HTTPRequestHead) -> Bool {
        guard !head.uri.isEmpty, head.uri.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return false }
        for (name, value) in head.headers {
            guard !name.isEmpty, name.utf8.allSatisfy(isTokenByte) else { return false }
            guard value.utf8.allSatisfy({ $0 != 0x0A && $0 != 0x0D && $0 != 0x00 }) else { return false }
        }
        return true
    }

    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        default:
            "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    /// Closes idle connections and refuses new exchanges; exchanges under way finish.
    func shutdown() {
        let (idle, waiters) = state.withLock { state in
            state.closed = true
            defer { state.idle.removeAll() }
            return (state.idle, state.waiters.removeAll())
        }
        for (channel, _) in idle { channel.close(promise: nil) }
        for waiter in waiters { waiter.resume(throwing: HTTP1PoolError.shutDown) }
    }

    // MARK: Connections

    private func lease(deadline: NIODeadline) async throws -> (any Channel, reused: Bool) {
        while true {
            var stale: [any Channel] = []
            defer { for channel in stale { channel.close(promise: nil) } }
            let oldest = NIODeadline.now() - maxIdle
            let lease: Lease? = try state.withLock { state in
                if state.closed { throw HTTP1PoolError.shutDown }
                while let (channel, since) = state.idle.popLast() {
                    if channel.isActive, since > oldest { return .connection(channel) }
                    stale.append(channel)
                    state.open -= 1
                }
                if state.open < maxConnections {
                    state.open += 1
                    return .create
                }
                return nil
            }
            switch lease {
            case .connection(let channel):
                return (channel, true)
            case .create:
                return (try await connect(), false)
            case nil:
                let granted = try await WaiterQueue<Lease>.wait { ticket, continuation in
                    let closed = state.withLock { state in
                        if state.closed { return true }
                        state.waiters.append(continuation, ticket: ticket)
                        return false
                    }
                    if closed { continuation.resume(throwing: HTTP1PoolError.shutDown) }
                } leave: { ticket in
                    self.state.withLock { $0.waiters.remove(ticket) }
                }
                switch granted {
                case .connection(let channel) where channel.isActive:
                    return (channel, true)
                case .connection(let channel):
                    channel.close(promise: nil)
                    return (try await connect(), false)  // its slot is ours
                case .create:
                    return (try await connect(), false)
                }
            }
        }
    }

    /// Opens a connection in a slot already counted in `open`; gives the slot back if it cannot.
    private func connect() async throws -> any Channel {
        let ssl = self.ssl
        let host = origin.host
        // The TLS handshake is part of connecting: a server the trust roots do not vouch for fails here, before any
        // request is written (nothing sent), not as an unknown outcome of the first request.
        let handshake = HandshakeBox()
        let timeout = connectTimeout
        do {
            let channel = try await ClientBootstrap(group: group)
                .connectTimeout(connectTimeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let ssl {
                            // An IP address is no server name for SNI; the certificate is still checked against it.
                            let name = host.first.map { $0.isNumber || $0 == "[" } == true ? nil : host
                            try channel.pipeline.syncOperations.addHandler(
                                try NIOSSLClientHandler(context: ssl, serverHostname: name)
                            )
                            let watcher = TLSHandshakeWatcher(eventLoop: channel.eventLoop, timeout: timeout)
                            handshake.future.withLock { $0 = watcher.done }
                            try channel.pipeline.syncOperations.addHandler(watcher)
                        }
                        try channel.pipeline.syncOperations.addHTTPClientHandlers(enableOutboundHeaderValidation: false)
                        try channel.pipeline.syncOperations.addHandler(HTTP1ExchangeHandler())
                    }
                }
                .connect(host: origin.host, port: origin.port)
                .get()
            if let done = handshake.future.withLock({ $0 }) {
                do {
                    try await done.get()
                } catch {
                    channel.close(promise: nil)
                    throw error
                }
            }
            return channel
        } catch {
            release(nil, reusable: false)
            throw HTTP1PoolError.connect("\(error)")
        }
    }

    /// Gives a connection back: to the first waiter, else to the idle list; a connection that cannot be reused is
    /// closed and its slot handed to a waiter (who opens a new one) or freed.
    private func release(_ channel: (any Channel)?, reusable: Bool) {
        let keep = reusable && channel?.isActive == true
        let (waiter, grant, close) = state.withLock { state -> (WaiterQueue<Lease>.Continuation?, Lease?, Bool) in
            if let waiter = state.waiters.popFirst() {
                if keep, let channel { return (waiter, .connection(channel), false) }
                return (waiter, .create, true)
            }
            if keep, let channel, !state.closed {
                state.idle.append((channel, .now()))
                return (nil, nil, false)
            }
            state.open -= 1
            return (nil, nil, true)
        }
        if close { channel?.close(promise: nil) }
        if let waiter, let grant { waiter.resume(returning: grant) }
    }
}

/// Where the connection's initializer leaves the future of its TLS handshake.
private final class HandshakeBox: Sendable {
    let future = Mutex<EventLoopFuture<Void>?>(nil)
}

/// Succeeds when the TLS handshake is done; fails with its error, when the connection closes first, or after
/// `timeout`. Completed on the channel's event loop only.
private final class TLSHandshakeWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private let promise: EventLoopPromise<Void>
    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?
    var done: EventLoopFuture<Void> { promise.futureResult }

    init(eventLoop: any EventLoop, timeout: TimeAmount) {
        promise = eventLoop.makePromise()
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let promise = self.promise
        timer = context.eventLoop.scheduleTask(in: timeout) {
            promise.fail(HTTP1PoolError.connect("TLS handshake timed out"))
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish(.failure(HTTP1PoolError.connect("closed during the TLS handshake")))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { finish(.success(())) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(HTTP1PoolError.connect("TLS: \(error)")))
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(HTTP1PoolError.connect("closed during the TLS handshake")))
        context.fireChannelInactive()
    }

    /// The first outcome wins; a promise completed again is left as it was.
    private func finish(_ result: Result<Void, any Error>) {
        timer?.cancel()
        timer = nil
        promise.completeWith(result)
    }
}

/// Why an exchange failed.
enum HTTP1PoolError: Error, CustomStringConvertible, Equatable {
    case connect(String)
    /// The connection was closed before the request was written (a kept-alive connection the server dropped).
    case closedBeforeWriting
    /// The connection was closed or reset after the request was written, before any byte of the answer.
    case closedBeforeAnswer(String)
    /// The connection was closed after part of the answer came.
    case closedMidExchange
    /// No answer within the time allowed, after the request was written.
    case timedOut
    /// The time allowed ran out before the request was written (waiting for a connection): not sent.
    case notSentInTime
    /// A request target or header that would break the request's framing (a line break in a token, say).
    case malformedRequest
    case responseTooLarge(Int)
    case shutDown
    case io(String)

    /// Whether the request may have reached the provider and been acted on: it was written (or may have been) and
    /// no answer came.
    var outcomeUnknown: Bool {
        switch self {
        case .closedBeforeAnswer, .closedMidExchange, .timedOut, .io, .responseTooLarge: true
        case .connect, .closedBeforeWriting, .notSentInTime, .malformedRequest, .shutDown: false
        }
    }

    var description: String {
        switch self {
        case .connect(let reason): "cannot connect: \(reason)"
        case .closedBeforeWriting: "connection closed before the request was written"
        case .closedBeforeAnswer(let reason): "connection closed before any answer (\(reason))"
        case .closedMidExchange: "connection closed before the whole answer came"
        case .timedOut: "no answer in time"
        case .notSentInTime: "no connection in time; not sent"
        case .malformedRequest: "request target or header not well-formed; not sent"
        case .responseTooLarge(let cap): "answer over \(cap) bytes"
        case .shutDown: "the HTTP pool is shut down"
        case .io(let reason): "I/O error: \(reason)"
        }
    }
}

/// One request written to a connection and the promise of its answer.
struct HTTP1Exchange: Sendable {
    struct Answer: Sendable {
        var status: Int
        var body: [UInt8]
        var keepAlive: Bool
    }

    var head: HTTPRequestHead
    var body: ByteBuffer?
    var deadline: NIODeadline
    var maxResponseBytes: Int
    var completion: Completion

    /// The promise of the answer, completed once whoever comes first (the handler, or a failed write).
    final class Completion: Sendable {
        let promise: EventLoopPromise<Answer>
        private let done = Atomic(false)

        init(_ promise: EventLoopPromise<Answer>) {
            self.promise = promise
        }

        func complete(_ result: Result<Answer, any Error>) {
            guard done.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
            else { return }
            promise.completeWith(result)
        }
    }
}

/// Writes an ``HTTP1Exchange``'s request and completes its promise with the answer, or with an error when the
/// connection closes, fails or the deadline passes first (the connection is then closed: it cannot be reused).
final class HTTP1ExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTP1Exchange
    typealias OutboundOut = HTTPClientRequestPart

    private var current: HTTP1Exchange?
    private var written = false
    private var timeout: Scheduled<Void>?
    private var status = 0
    private var keepAlive = true
    private var body: ByteBuffer?
    private var tooLarge = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let exchange = unwrapOutboundIn(data)
        guard current == nil, context.channel.isActive, exchange.deadline > .now() else {
            let error: HTTP1PoolError =
                current != nil ? .io("busy") : context.channel.isActive ? .notSentInTime : .closedBeforeWriting
            exchange.completion.complete(.failure(error))
            promise?.fail(error)
            return
        }
        current = exchange
        written = false
        status = 0
        keepAlive = true
        body = nil
        tooLarge = false
        let loop = context.eventLoop.assumeIsolated()
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timeout = loop.scheduleTask(deadline: exchange.deadline) { [self] in
            self.finish(.failure(HTTP1PoolError.timedOut))
            bound.value.close(promise: nil)
        }
        context.write(wrapOutboundOut(.head(exchange.head)), promise: nil)
        if let body = exchange.body { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        let done = context.eventLoop.makePromise(of: Void.self)
        done.futureResult.assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success: self.written = true
            case .failure(let error): self.finish(.failure(HTTP1PoolError.io("\(error)")))
            }
        }
        if let promise { done.futureResult.cascade(to: promise) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let exchange = current else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
            keepAlive = head.isKeepAlive
        case .body(var part):
            if tooLarge { return }
            if (body?.readableBytes ?? 0) + part.readableBytes > exchange.maxResponseBytes {
                tooLarge = true
            } else if body == nil {
                body = part
            } else {
                body!.writeBuffer(&part)
            }
        case .end:
            if tooLarge {
                finish(.failure(HTTP1PoolError.responseTooLarge(exchange.maxResponseBytes)))
                context.close(promise: nil)
            } else {
                let bytes = body.map { Array($0.readableBytesView) } ?? []
                finish(.success(HTTP1Exchange.Answer(status: status, body: bytes, keepAlive: keepAlive)))
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(closed("closed")))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let reset = (error as? IOError).map { $0.errnoCode == ECONNRESET || $0.errnoCode == EPIPE } ?? false
        finish(.failure(reset ? closed("\(error)") : HTTP1PoolError.io("\(error)")))
        context.close(promise: nil)
    }

    /// What a connection closed or reset now means for the exchange under way.
    private func closed(_ reason: String) -> HTTP1PoolError {
        if !written { return .closedBeforeWriting }
        return status == 0 ? .closedBeforeAnswer(reason) : .closedMidExchange
    }

    private func finish(_ result: Result<HTTP1Exchange.Answer, any Error>) {
        guard let exchange = current else { return }
        current = nil
        timeout?.cancel()
        timeout = nil
        exchange.completion.complete(result)
    }
}
