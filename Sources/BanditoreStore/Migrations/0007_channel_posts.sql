-- Bulletins posted once per language to Telegram public channels (TELEGRAM_CHANNEL_POSTS). A post's outcome is a
-- delivery without a subscriber, so that the dispatchers send, retry and record it as any other; it is written
-- before the audience, outside the bulletin's range of audience ids, so the audience counts leave it out.
ALTER TABLE deliveries ALTER COLUMN subscriber_id DROP NOT NULL;

CREATE TABLE channel_posts (
    bulletin_id uuid NOT NULL,
    chat        text NOT NULL,
    language    text NOT NULL,
    delivery_id bigint NOT NULL UNIQUE,
    PRIMARY KEY (bulletin_id, chat, language)
);
