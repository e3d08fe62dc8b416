-- The composer's fan-out: how far the delivery jobs of a bulletin have been published (the last delivery id
-- whose job the broker confirmed), when its deliveries were created, and the id that follows it through the logs.
ALTER TABLE bulletins
    ADD COLUMN fanout_cursor bigint NOT NULL DEFAULT 0,
    ADD COLUMN audience_created_at timestamptz,
    ADD COLUMN correlation_id text;

-- The composer's scheduler looks for bulletins whose time has come, and for fan-outs a crash interrupted.
CREATE INDEX bulletins_pending ON bulletins (scheduled_for) WHERE state IN ('scheduled', 'sending');
