-- A key's notices found by key: a replacement's notice is folded into one still queued for the
-- same key, and spaced an hour after the last one sent (a key replaced again and again from
-- many addresses flooded its email with notices; found by an independent check).
CREATE INDEX outbox_by_key ON outbox (key_id, kind, status);
