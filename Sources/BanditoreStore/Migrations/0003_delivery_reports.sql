-- Providers' reports on sent messages (WhatsApp statuses) that arrive before the dispatcher has recorded the send
-- (or that are about replies, which have no delivery row): kept here, applied by the dispatcher when it records
-- the send and by the registry's sweep, forgotten after two days.
CREATE TABLE delivery_reports (
    channel             text NOT NULL,
    provider_message_id text NOT NULL,
    status              text NOT NULL CHECK (status IN ('sent', 'delivered', 'read', 'failed')),
    rank                integer NOT NULL,
    last_error          text,
    received_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, provider_message_id)
);
CREATE INDEX delivery_reports_by_time ON delivery_reports (received_at);
