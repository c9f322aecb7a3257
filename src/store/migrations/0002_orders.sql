-- Orders (one per checkout attempt) and processed PayPal webhook events.
CREATE TABLE orders (
    order_id            TEXT PRIMARY KEY,
    plan                TEXT NOT NULL,
    email               TEXT NOT NULL,
    amount_nanos        INTEGER NOT NULL CHECK (amount_nanos >= 0),
    currency            TEXT NOT NULL DEFAULT 'USD',
    status              TEXT NOT NULL CHECK (status IN ('created', 'pending', 'paid', 'failed', 'refunded')),
    paypal_order_id     TEXT UNIQUE,
    paypal_capture_id   TEXT UNIQUE,
    key_id              TEXT UNIQUE REFERENCES keys (id),
    browser_token_hash  BLOB,
    created_at          INTEGER NOT NULL,
    paid_at             INTEGER,
    refunded_at         INTEGER
);
CREATE INDEX orders_by_time ON orders (created_at);

CREATE TABLE webhook_events (
    event_id     TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    received_at  INTEGER NOT NULL
);
