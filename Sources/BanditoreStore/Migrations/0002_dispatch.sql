-- Dispatchers: the shared rate limit becomes a schedule of send slots (GCRA), and the WeChat access token is
-- kept where every replica finds it.

-- Each replica leases the next few slots of its channel with one UPDATE; slots are 1/rate apart, so the channel's
-- pace holds however many replicas lease.
ALTER TABLE rate_limits ADD COLUMN next_slot_at timestamptz NOT NULL DEFAULT now();

-- One access token per provider account, refreshed once when it expires and shared by every replica.
CREATE TABLE provider_tokens (
    account         text PRIMARY KEY,
    token           text NOT NULL,
    expires_at      timestamptz NOT NULL,
    refreshed_at    timestamptz NOT NULL DEFAULT now()
);
