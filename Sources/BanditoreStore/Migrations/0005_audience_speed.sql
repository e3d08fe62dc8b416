-- A bulletin's audience is created by one INSERT … SELECT of up to millions of rows (banditore-composer). The
-- per-row checks of these two foreign keys and the upkeep of this unique index were three fifths of its time for
-- a million subscribers. They guard nothing the composer does not: its rows come from subscribers and bulletins
-- that exist (neither is ever deleted), in the transaction that marks the audience created, after locking the
-- bulletin's row and finding it not created yet.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_bulletin_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_subscriber_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_bulletin_id_subscriber_id_channel_key;
