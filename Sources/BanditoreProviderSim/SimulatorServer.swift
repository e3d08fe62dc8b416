import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// Serves a ``ProviderSimulator`` over HTTP/1.1 on SwiftNIO directly: each request is answered on its event loop
/// without a hop to the task pool, so that the simulator stays far above the rates of the benchmarks it serves.
/// Keep-alive and pipelined requests are answered in order; delayed answers (latency, timeouts) are scheduled on
/// the loop, not slept.
public final class SimulatorServer: Service, Sendable {
    private let simulator: ProviderSimulator
    private let host: String
    private let port: Int
    private let logger: Logger
    private let group: any EventLoopGroup

    public init(
        simulator: ProviderSimulator, host: String, port: Int, logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.simulator = simulator
        self.host = host
        self.port = port
        self.logger = logger
        self.group = group
    }

    /// Binds, then answers until graceful shutdown or cancellation.
    public func run() async throws {
        let channel = try await bind()
        logger.info(
            "provider simulator listening", metadata: ["http.address": "\(host):\(channel.localAddress?.port ?? port)"])
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                try? await channel.closeFuture.get()
            } onCancel: {
                channel.close(promise: nil)
            }
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }

    /// Binds and returns the listening channel (port 0 picks a free port); close it to stop.
    public func bind() async throws -> any Channel {
        let simulator = simulator
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // NIO's request decoder only: the handler answers pipelined requests in order itself, writes
                    // each answer as one buffer (NIO's response encoder, header validator and error handler took
                    // about an eighth of the simulator's time under a benchmark), and answers a request it cannot
                    // parse.
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes))
                    )
                    try channel.pipeline.syncOperations.addHandler(SimulatorHTTPHandler(simulator: simulator))
                }
            }
            .bind(host: host, port: port)
            .get()
    }
}

/// Reads whole requests, hands them to the simulator, writes the answers in order.
final class SimulatorHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = ByteBuffer

    private let simulator: ProviderSimulator
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false
    private var busy = false
    private var failed = false
    private var waiting: [(HTTPRequestHead, [UInt8], Bool)] = []

    init(simulator: ProviderSimulator) {
        self.simulator = simulator
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.removeAll(keepingCapacity: true)
            tooLarge = false
        case .body(let buffer):
            if body.count + buffer.readableBytes > ProviderSimulator.maxBody {
                tooLarge = true
            } else {
                body.append(contentsOf: buffer.readableBytesView)
            }
        case .end:
            guard let head else { return }
            self.head = nil
            waiting.append((head, body, tooLarge))
            if !busy { next(context: context) }
        }
    }

    private func next(context: ChannelHandlerContext) {
        guard !waiting.isEmpty else { return }
        let (head, body, tooLarge) = waiting.removeFirst()
        busy = true
        let keepAlive = head.isKeepAlive
        let headOnly = head.method == .HEAD
        if tooLarge {
            write(
                context: context,
                .json(.payloadTooLarge, "{\"error\":\"request body over \(ProviderSimulator.maxBody) bytes\"}"),
                keepAlive: false, headOnly: headOnly)
            return
        }
        let reply = simulator.handle(SimRequest(method: head.method, uri: head.uri, headers: head.headers, body: body))
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        switch reply {
        case .now(let response) where response.delayMs <= 0:
            write(context: context, response, keepAlive: keepAlive, headOnly: headOnly)
        case .now(let response):
            context.eventLoop.scheduleTask(in: .microseconds(Int64(response.delayMs * 1000))) {
                let (handler, context) = bound.value
                handler.write(context: context, response, keepAlive: keepAlive, headOnly: headOnly)
            }
        case .later(let operation):
            let promise = context.eventLoop.makePromise(of: SimResponse.self)
            promise.completeWithTask { await operation() }
            promise.futureResult.whenSuccess { response in
                let (handler, context) = bound.value
                handler.write(context: context, response, keepAlive: keepAlive, headOnly: headOnly)
            }
        }
    }

    /// The answer as one buffer: status line, headers, and the body unless the request was a HEAD.
    private func write(context: ChannelHandlerContext, _ response: SimResponse, keepAlive: Bool, headOnly: Bool) {
        guard context.channel.isActive else { return }
        let bodyLength = response.body.utf8.count
        var buffer = context.channel.allocator.buffer(capacity: bodyLength + 128)
        buffer.writeString("HTTP/1.1 \(response.status.code) \(response.status.reasonPhrase)\r\n")
        buffer.writeString("content-type: \(response.contentType)\r\ncontent-length: \(bodyLength)\r\n")
        if !keepAlive { buffer.writeString("connection: close\r\n") }
        buffer.writeString("\r\n")
        if !headOnly { buffer.writeString(response.body) }
        busy = false
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
            next(context: context)
        } else {
            context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { [channel = context.channel] _ in
                channel.close(promise: nil)
            }
        }
    }

    /// A request that is not HTTP/1.1 (or over the decoder's limits): 400 and close, as NIO's error handler would,
    /// unless an answer is already under way (the connection is then only closed).
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !failed else { return }
        failed = true
        waiting.removeAll()
        guard error is HTTPParserError, !busy else {
            context.close(promise: nil)
            return
        }
        busy = true
        var buffer = context.channel.allocator.buffer(capacity: 96)
        buffer.writeString("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { [channel = context.channel] _ in
            channel.close(promise: nil)
        }
    }
}
