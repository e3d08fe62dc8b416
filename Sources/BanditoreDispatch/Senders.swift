import BanditoreChannels
import BanditoreCore
import Foundation
import Logging

/// Sends through the WhatsApp Cloud API: templates for bulletins, free text for replies.
public struct WhatsAppSender: ChannelSender {
    public struct Configuration: Sendable {
        public var apiVersion: String
        public var phoneNumberID: String
        public var accessToken: String
        public init(apiVersion: String = "v21.0", phoneNumberID: String, accessToken: String) {
            self.apiVersion = apiVersion
            self.phoneNumberID = phoneNumberID
            self.accessToken = accessToken
        }
    }
    public let channel = Channel.whatsapp
    let configuration: Configuration
    let http: ProviderHTTP

    public init(configuration: Configuration, http: ProviderHTTP) {
        self.configuration = configuration
        self.http = http
    }

    public func send(_ message: RenderedMessage, to address: String, options: SendOptions) async -> SendOutcome {
        await perform(http) {
            switch message.kind {
            case .text:
                try WhatsApp.textMessage(
                    apiVersion: configuration.apiVersion, phoneNumberID: configuration.phoneNumberID,
                    token: configuration.accessToken, to: address, body: message.text ?? ""
                )
            case .template:
                try WhatsApp.templateMessage(
                    apiVersion: configuration.apiVersion, phoneNumberID: configuration.phoneNumberID,
                    token: configuration.accessToken, to: address, template: message.template ?? "",
                    language: message.templateLanguage ?? "it", parameters: message.parameters ?? []
                )
            }
        } decode: { status, body in
            WhatsApp.decodeSendResponse(status: status, body: body).map { Optional($0) }
        }
    }
}

/// Sends through the Telegram Bot API: plain text (link previews off) for bulletins and replies.
public struct TelegramSender: ChannelSender {
    public let channel = Channel.telegram
    let botToken: String
    let http: ProviderHTTP

    public init(botToken: String, http: ProviderHTTP) {
        self.botToken = botToken
        self.http = http
    }

    public func send(_ message: RenderedMessage, to address: String, options: SendOptions) async -> SendOutcome {
        let chat: Telegram.ChatID = Int64(address).map { .id($0) } ?? .username(address)
        return await perform(http) {
            try Telegram.sendMessage(
                token: botToken, chat: chat, text: message.text ?? "", paidBroadcast: options.paidBroadcast
            )
        } decode: { status, body in
            Telegram.decodeSendResponse(status: status, body: body).map { Optional(String($0)) }
        }
    }
}

/// Sends through the WeChat Official Account API: template messages for bulletins, custom text for replies. The
/// access token comes from ``ProviderTokenStore``, shared by every replica and renewed once when it expires.
public struct WeChatSender: ChannelSender {
    public let channel = Channel.wechat
    let tokens: ProviderTokenStore
    let http: ProviderHTTP

    public init(tokens: ProviderTokenStore, http: ProviderHTTP) {
        self.tokens = tokens
        self.http = http
    }

    public func send(_ message: RenderedMessage, to address: String, options: SendOptions) async -> SendOutcome {
        let token: String
        do {
            token = try await tokens.current()
        } catch {
            return .failed(Self.tokenFailure(error))
        }
        let outcome = await send(message, to: address, token: token, key: options.idempotencyKey)
        guard case .failed(.auth) = outcome else { return outcome }
        // Expired or replaced: renew once (another replica may have done it already) and try again.
        do {
            let renewed = try await tokens.renew(rejected: token)
            return await send(message, to: address, token: renewed, key: options.idempotencyKey)
        } catch {
            return .failed(Self.tokenFailure(error))
        }
    }

    private func send(_ message: RenderedMessage, to address: String, token: String, key: String?) async -> SendOutcome
    {
        await perform(http) {
            switch message.kind {
            case .text:
                try WeChat.customText(accessToken: token, openID: address, content: message.text ?? "")
            case .template:
                try WeChat.template(
                    accessToken: token, openID: address, templateID: message.template ?? "",
                    data: message.fields ?? [:], url: message.url, clientMessageID: key
                )
            }
        } decode: { status, body in
            WeChat.decodeSendResponse(status: status, body: body).map { $0.map(String.init) }
        }
    }

    private static func tokenFailure(_ error: any Error) -> ProviderFailure {
        if let failure = error as? ProviderFailure {
            // A refused renewal is retried later like any transient failure; the credential may be fixed meanwhile.
            if case .auth(let reason) = failure { return .transient(reason: "access token refused: \(reason)") }
            return failure
        }
        return .transient(reason: "access token: \(type(of: error))")
    }
}

/// Builds a request, performs it and decodes its answer. A message the channel's encoder refuses (too long, bad
/// template) is a permanent failure of that message; a provider that cannot be reached is a transient failure.
private func perform(
    _ http: ProviderHTTP, request build: () throws -> ProviderRequest,
    decode: (Int, [UInt8]) -> Result<String?, ProviderFailure>
) async -> SendOutcome {
    let request: ProviderRequest
    do {
        request = try build()
    } catch {
        return .failed(.permanent(code: "invalid-message", reason: "\(error)"))
    }
    do {
        let (status, body) = try await http.perform(request)
        switch decode(status, body) {
        case .success(let id): return .sent(providerMessageID: id)
        case .failure(let failure): return .failed(failure)
        }
    } catch let error as HTTP1PoolError where error.outcomeUnknown {
        return .failed(.unknownOutcome(reason: "\(error)"))
    } catch {
        return .failed(.transient(reason: "provider unreachable: \(error)"))
    }
}
