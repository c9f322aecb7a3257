-- The requests that replaced a key's text, by the hash `shop::rotate::Recent` knows them by
-- (the scope, the old text or the dashboard's grant, and the request's idempotency key or
-- CSRF token, hashed together): a request sent again after a restart — its answer lost when
-- the daemon died — still gets the text its first sending made, instead of a 401 for a key it
-- can no longer use. Kept a day; read back for ten minutes.
CREATE TABLE rotation_requests (
    id          BLOB PRIMARY KEY,
    key_id      TEXT NOT NULL REFERENCES keys (id),
    created_at  INTEGER NOT NULL
);
CREATE INDEX rotation_requests_by_time ON rotation_requests (created_at);
