-- The per-recipient pace shared by a channel's dispatcher replicas: when each address may get its next message.
-- A replica claims an address as it starts a send (one statement for the sends it starts at once); a replica that
-- finds the address claimed waits until it is free, so two replicas never send to one chat within its interval.
CREATE TABLE recipient_pace (
    channel     text NOT NULL,
    address     text NOT NULL,
    free_at     timestamptz NOT NULL,
    PRIMARY KEY (channel, address)
) WITH (fillfactor = 70);
