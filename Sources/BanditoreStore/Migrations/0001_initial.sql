-- Banditore's first schema: subscribers and their topics, inbound dedupe, bulletins, deliveries,
-- the shared rate-limit buckets and the outbox.

CREATE TABLE topics (
    slug        text PRIMARY KEY CHECK (slug ~ '^[a-z][a-z0-9-]{1,40}$'),
    name_it     text NOT NULL,
    name_zh     text,
    name_en     text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO topics (slug, name_it, name_zh, name_en) VALUES
    ('farmacie', 'Farmacie di turno', '值班药店', 'Pharmacies on duty'),
    ('protezione-civile', 'Protezione civile e allerte meteo', '民防和天气警报', 'Civil protection and weather alerts'),
    ('scuola', 'Scuola: nidi, mensa, trasporto, iscrizioni, scioperi', '学校：托儿所、食堂、校车、注册、罢工',
        'School: nurseries, canteen, transport, enrolment, strikes'),
    ('scadenze', 'Scadenze', '截止日期', 'Deadlines'),
    ('eventi', 'Eventi', '活动', 'Events'),
    ('disservizi', 'Disservizi', '服务中断', 'Service disruptions')
ON CONFLICT (slug) DO NOTHING;

CREATE TABLE subscribers (
    id                  bigserial PRIMARY KEY,
    channel             text NOT NULL CHECK (channel IN ('whatsapp', 'telegram', 'wechat')),
    address             text NOT NULL,
    language            text NOT NULL DEFAULT 'it' CHECK (language IN ('it', 'zh', 'en')),
    active              boolean NOT NULL DEFAULT true,
    subscribed_at       timestamptz NOT NULL DEFAULT now(),
    unsubscribed_at     timestamptz,
    inactive_reason     text,
    last_inbound_at     timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel, address)
);
CREATE INDEX subscribers_active_by_channel ON subscribers (channel, id) WHERE active;

CREATE TABLE subscriber_topics (
    subscriber_id   bigint NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    topic           text NOT NULL REFERENCES topics (slug),
    PRIMARY KEY (subscriber_id, topic)
);
CREATE INDEX subscriber_topics_by_topic ON subscriber_topics (topic, subscriber_id);

-- Providers retry webhooks: each provider message id takes effect once.
CREATE TABLE inbound_messages (
    channel             text NOT NULL,
    provider_message_id text NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, provider_message_id)
);

CREATE TABLE bulletins (
    id                  uuid PRIMARY KEY,
    title               text NOT NULL,
    body                jsonb NOT NULL,
    topics              text[] NOT NULL,
    channels            text[] NOT NULL,
    urgency             text NOT NULL CHECK (urgency IN ('normal', 'urgent')),
    send_at             timestamptz,
    state               text NOT NULL DEFAULT 'submitted'
                        CHECK (state IN ('submitted', 'scheduled', 'sending', 'sent', 'cancelled')),
    idempotency_key     text UNIQUE,
    request_hash        text,
    scheduled_for       timestamptz,
    fanout_completed_at timestamptz,
    cancelled_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bulletins_by_state ON bulletins (state, scheduled_for);

CREATE TABLE deliveries (
    id                  bigserial PRIMARY KEY,
    bulletin_id         uuid NOT NULL REFERENCES bulletins (id),
    subscriber_id       bigint NOT NULL REFERENCES subscribers (id),
    channel             text NOT NULL,
    state               text NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'sent', 'delivered', 'read', 'failed', 'skipped', 'cancelled')),
    attempts            integer NOT NULL DEFAULT 0,
    provider_message_id text,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bulletin_id, subscriber_id, channel)
);
CREATE INDEX deliveries_progress ON deliveries (bulletin_id, channel, state);
CREATE INDEX deliveries_by_provider_id ON deliveries (channel, provider_message_id)
    WHERE provider_message_id IS NOT NULL;

-- One token bucket per channel, shared by every dispatcher replica.
CREATE TABLE rate_limits (
    channel         text PRIMARY KEY,
    rate_per_second double precision NOT NULL CHECK (rate_per_second > 0),
    burst           double precision NOT NULL CHECK (burst >= 1),
    tokens          double precision NOT NULL,
    refilled_at     timestamptz NOT NULL DEFAULT now()
);

-- Messages that must be published because a transaction committed; a relay publishes and marks them.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    exchange        text NOT NULL,
    routing_key     text NOT NULL,
    message_id      text NOT NULL UNIQUE,
    message_type    text NOT NULL,
    body            bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
