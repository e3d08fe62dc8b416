import BanditoreChannels
import BanditoreCore
import Foundation
import NIOHTTP1

/// `POST /{version}/{phone-number-id}/messages`, as the WhatsApp Business Cloud API.
extension ProviderSimulator {
    func whatsappSend(version: String, phoneNumberID: String, authorization: String?, body: [UInt8]) -> SimResponse {
        let channel = Channel.whatsapp
        // Credentials first, as the Graph API does.
        let token = authorization.flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil }
        guard let token, !token.isEmpty else {
            return reject(
                channel, "190",
                whatsappError(
                    .unauthorized, code: 190, message: "Invalid OAuth access token - Cannot parse access token",
                    details: "An access token is required."
                ))
        }
        guard state.withLock({ $0.whatsappToken == token }) else {
            return reject(
                channel, "190",
                whatsappError(
                    .unauthorized, code: 190,
                    message: "Error validating access token: The session has been invalidated",
                    details: "The access token is expired or revoked."
                ))
        }
        guard version.first == "v", Double(version.dropFirst()) != nil else {
            return reject(
                channel, "100",
                whatsappError(
                    .badRequest, code: 100, message: "(#100) Unknown path components: /\(version)",
                    details: "Unknown API version \(version)."
                ))
        }
        guard phoneNumberID == configuration.whatsappPhoneNumberID else {
            return reject(
                channel, "100",
                whatsappError(
                    .badRequest, code: 100,
                    message:
                        "Unsupported post request. Object with ID '\(phoneNumberID)' does not exist, cannot be loaded "
                        + "due to missing permissions, or does not support this operation",
                    details: "Unknown phone number id.", subcode: 33
                ))
        }

        // The message itself.
        guard let send = JSONValue.parse(body), send.isObject else {
            return reject(channel, "100", invalidParameter("The request body is not valid JSON."))
        }
        guard send["messaging_product"]?.string == "whatsapp" else {
            return reject(channel, "100", invalidParameter("messaging_product must be \"whatsapp\"."))
        }
        guard let to = send["to"]?.string, !to.isEmpty,
            to.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else {
            return reject(channel, "100", invalidParameter("Parameter 'to' must be a phone number in digits."))
        }
        var text: String
        var templateName: String?
        var parameters: [String]?
        let type = send["type"]?.string ?? "text"
        switch type {
        case "text":
            guard let body = send["text"]?["body"]?.string, !body.isEmpty else {
                return reject(channel, "100", invalidParameter("Parameter text['body'] is required."))
            }
            guard body.count <= WhatsApp.maxTextLength else {
                return reject(
                    channel, "100",
                    invalidParameter(
                        "Param text['body'] must be at most \(WhatsApp.maxTextLength) characters long."
                    ))
            }
            text = body
        case "template":
            let template = send["template"]
            guard let name = template?["name"]?.string, let expected = configuration.whatsappTemplates[name] else {
                return reject(
                    channel, "132001",
                    whatsappError(
                        .badRequest, code: 132001, message: "(#132001) Template name does not exist in the translation",
                        details: "template name (\(template?["name"]?.string ?? "")) does not exist in "
                            + (template?["language"]?["code"]?.string ?? "?")
                    ))
            }
            let values = (template?["components"]?.array ?? []).filter { $0["type"]?.string == "body" }
                .flatMap { $0["parameters"]?.array ?? [] }.map { $0["text"]?.string ?? "" }
            guard values.count == expected else {
                return reject(
                    channel, "132000",
                    whatsappError(
                        .badRequest, code: 132000,
                        message: "(#132000) Number of parameters does not match the expected number of params",
                        details:
                            "body: number of localizable_params (\(values.count)) does not match the expected number "
                            + "of params (\(expected))"
                    ))
            }
            do {
                try WhatsApp.validateTemplateParameters(values)
            } catch let error as ChannelLimitError {
                return reject(
                    channel, "132012",
                    whatsappError(
                        .badRequest, code: 132012,
                        message: "(#132012) Parameter format does not match format in the created template",
                        details: error.description
                    ))
            } catch {
                return reject(channel, "132012", invalidParameter("\(error)"))
            }
            templateName = name
            parameters = values
            text = values.joined(separator: "\n")
        default:
            return reject(channel, "100", invalidParameter("Unsupported message type \(type)."))
        }

        let drawn = draw(channel)
        let delay = drawn.delayMs
        switch drawn.fault {
        case .none, .late: break
        case .timeout:
            return whatsappError(
                .serviceUnavailable, code: 131016, message: "(#131016) Service unavailable",
                details: "A service is temporarily unavailable."
            ).delayed(delay)
        case .error:
            return whatsappError(
                .internalServerError, code: 131000, message: "(#131000) Something went wrong",
                details: "Something went wrong. Please retry later."
            ).delayed(delay)
        }

        let now = now()
        let (outcome, wamid, inResponse): (Outcome, String, Bool) = state.withLock { s in
            if s.takeGlobal(channel, now: now) != nil {
                return (.throttled(code: 130429), "", false)
            }
            let inResponse = s.behaviour.whatsappFailuresInResponse
            let refused =
                s.isUnknown(channel, to) || s.isBlocked(channel, to)
                || (templateName == nil && !s.windowOpen(channel, to, hours: 24, now: now))
            // A request refused at once is no message to the user; one accepted (even to fail later) counts
            // towards the pair's pace.
            if !(refused && inResponse) {
                let pairInterval = s.behaviour.whatsappPairIntervalSeconds
                let pairRate = pairInterval > 0 ? 1 / pairInterval : 0
                if s.takeRecipient("w|\(to)", rate: pairRate, burst: Double(s.behaviour.whatsappPairBurst), now: now)
                    != nil
                {
                    return (.throttled(code: 131056), "", false)
                }
            }
            let wamid = "wamid.SIM\(instance)x\(s.nextCounter())"
            if s.isUnknown(channel, to) || s.isBlocked(channel, to) {
                s.recorder.count(channel) { $0.rejected["131026", default: 0] += 1 }
                return (
                    .failed(
                        code: 131026, title: "Message undeliverable",
                        details: "The recipient is not on WhatsApp or cannot receive this message."),
                    wamid, inResponse
                )
            }
            if templateName == nil && !s.windowOpen(channel, to, hours: 24, now: now) {
                s.recorder.count(channel) { $0.rejected["131047", default: 0] += 1 }
                return (
                    .failed(
                        code: 131047, title: "Re-engagement message",
                        details: "Message failed to send because more than 24 hours have passed since the "
                            + "customer last replied to this number."),
                    wamid, inResponse
                )
            }
            s.recorder.record(
                channel: channel, recipient: to, kind: templateName == nil ? "text" : "template", text: text,
                template: templateName, parameters: parameters, providerMessageID: wamid
            )
            return (.accepted, wamid, inResponse)
        }
        return whatsappAnswer(outcome: outcome, to: to, wamid: wamid, template: templateName, inResponse: inResponse)
            .delayed(delay)
    }

    private enum Outcome {
        case throttled(code: Int)
        case failed(code: Int, title: String, details: String)
        case accepted
    }

    private func whatsappAnswer(outcome: Outcome, to: String, wamid: String, template: String?, inResponse: Bool)
        -> SimResponse
    {
        switch outcome {
        case .throttled(let code):
            count(.whatsapp, rejected: "\(code)", throttled: true)
            return code == 130429
                ? whatsappError(
                    .badRequest, code: 130429, message: "(#130429) Rate limit hit",
                    details: "Cloud API message throughput has been reached."
                )
                : whatsappError(
                    .badRequest, code: 131056,
                    message: "(#131056) (Business Account, Consumer Account) pair rate limit hit",
                    details: "Message failed to send because there were too many messages sent from this phone "
                        + "number to the same phone number in a short period of time."
                )
        case .failed(let code, let title, let details):
            if inResponse {
                return whatsappError(.badRequest, code: code, message: "(#\(code)) \(title)", details: details)
            }
            statusWebhooks.enqueue(
                .init(
                    messageID: wamid, status: "failed", recipient: to, errorCode: code,
                    errorTitle: title, errorDetails: details))
            return whatsappAccepted(to: to, wamid: wamid, template: template != nil)
        case .accepted:
            statusWebhooks.enqueue(.init(messageID: wamid, status: "sent", recipient: to))
            statusWebhooks.enqueue(.init(messageID: wamid, status: "delivered", recipient: to))
            return whatsappAccepted(to: to, wamid: wamid, template: template != nil)
        }
    }

    private func whatsappAccepted(to: String, wamid: String, template: Bool) -> SimResponse {
        let status = template ? ",\"message_status\":\"accepted\"" : ""
        return .json(
            .ok,
            "{\"messaging_product\":\"whatsapp\",\"contacts\":[{\"input\":\(JSONText.quote(to)),"
                + "\"wa_id\":\(JSONText.quote(to))}],\"messages\":[{\"id\":\(JSONText.quote(wamid))\(status)}]}"
        )
    }

    private func invalidParameter(_ details: String) -> SimResponse {
        whatsappError(.badRequest, code: 100, message: "(#100) Invalid parameter", details: details)
    }

    /// The Graph API error envelope.
    func whatsappError(
        _ status: HTTPResponseStatus, code: Int, message: String, details: String, subcode: Int? = nil
    ) -> SimResponse {
        let sub = subcode.map { ",\"error_subcode\":\($0)" } ?? ""
        return .json(
            status,
            "{\"error\":{\"message\":\(JSONText.quote(message)),\"type\":\"OAuthException\",\"code\":\(code),"
                + "\"error_data\":{\"messaging_product\":\"whatsapp\",\"details\":\(JSONText.quote(details))}\(sub),"
                + "\"fbtrace_id\":\"\(traceID())\"}}"
        )
    }

    /// Counts a refusal and passes the response through.
    func reject(_ channel: Channel, _ code: String, _ response: SimResponse) -> SimResponse {
        count(channel, rejected: code, throttled: false)
        return response
    }

    func count(_ channel: Channel, rejected code: String, throttled: Bool) {
        state.withLock { s in
            s.recorder.count(channel) {
                $0.rejected[code, default: 0] += 1
                if throttled { $0.throttled += 1 }
            }
        }
    }
}
