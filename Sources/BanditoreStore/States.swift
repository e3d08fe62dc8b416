import BanditorePostgres

/// Where a bulletin stands (`bulletins.state`): `submitted` by the admin API, `scheduled` for its service window or
/// `send_at`, `sending` while its audience is fanned out, `sent` once every job is queued, or `cancelled`.
public enum BulletinState: String, Sendable, Codable, CaseIterable, SQLEncodable, SQLDecodable {
    case submitted, scheduled, sending, sent, cancelled

    public var postgresText: String? { rawValue }

    public init(postgresText text: String) throws {
        guard let state = Self(rawValue: text) else { throw DecodingFailure(type: "BulletinState", text: text) }
        self = state
    }
}

/// Where one delivery stands (`deliveries.state`): `queued` until sent or given up; then `sent`, and `delivered`
/// and `read` as the provider reports them; `failed` (attempts ran out, or refused for good), `skipped` (the
/// citizen left before their turn), or `cancelled` with its bulletin.
public enum DeliveryState: String, Sendable, Codable, CaseIterable, SQLEncodable, SQLDecodable {
    case queued, sent, delivered, read, failed, skipped, cancelled

    public var postgresText: String? { rawValue }

    public init(postgresText text: String) throws {
        guard let state = Self(rawValue: text) else { throw DecodingFailure(type: "DeliveryState", text: text) }
        self = state
    }
}

/// Why a delivery failed for good (`deliveries.failure_kind`), with the provider's code (`failure_code`).
public struct DeliveryFailure: Sendable, Hashable {
    public enum Kind: String, Sendable, CaseIterable, SQLEncodable, SQLDecodable {
        /// The provider refused the message for good.
        case permanent
        /// The provider refused it because the address is gone (blocked, unfollowed, not on the service).
        case unreachable
        /// Its attempts ran out.
        case gaveUp = "gave_up"

        public var postgresText: String? { rawValue }

        public init(postgresText text: String) throws {
            guard let kind = Self(rawValue: text) else {
                throw DecodingFailure(type: "DeliveryFailure.Kind", text: text)
            }
            self = kind
        }
    }

    public var kind: Kind
    /// The provider's code (`131026`, `403`...), when it gave one.
    public var code: String?

    public init(_ kind: Kind, code: String? = nil) {
        self.kind = kind
        self.code = code
    }
}
