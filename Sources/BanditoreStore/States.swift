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
