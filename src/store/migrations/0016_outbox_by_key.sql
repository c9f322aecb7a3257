-- A key's notices found by key, and an address's by address: a replacement's notice is folded
-- into one still queued for the same key, spaced an hour after the last one sent, and an
-- address gets at most a day's worth of them (a key replaced again and again from many
-- addresses flooded its email with notices; found by independent checks).
CREATE INDEX outbox_by_key ON outbox (key_id, kind, status);
CREATE INDEX outbox_by_recipient ON outbox (recipient, kind, created_at);
