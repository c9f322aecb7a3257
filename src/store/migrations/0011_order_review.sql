-- An order whose capture PayPal completed but that does not match it (amount, currency,
-- invoice), or a top-up whose key was revoked before its payment came in, is `review`: PayPal
-- holds the buyer's money, no key or credit was given, and the operator settles it by hand
-- (a refund, or a key). It was `failed`, which told the buyer the payment had not gone
-- through and to buy again. Its capture id is kept too (the operator refunds by it).
-- SQLite cannot change a CHECK in place, so the table is rebuilt, once; nothing references it.
CREATE TABLE orders_new (
    order_id            TEXT PRIMARY KEY,
    plan                TEXT NOT NULL,
    email               TEXT NOT NULL,
    amount_nanos        INTEGER NOT NULL CHECK (amount_nanos >= 0),
    currency            TEXT NOT NULL DEFAULT 'USD',
    status              TEXT NOT NULL
                        CHECK (status IN ('created', 'pending', 'paid', 'failed', 'review', 'refunded')),
    paypal_order_id     TEXT UNIQUE,
    paypal_capture_id   TEXT UNIQUE,
    key_id              TEXT UNIQUE REFERENCES keys (id),
    browser_token_hash  BLOB,
    created_at          INTEGER NOT NULL,
    paid_at             INTEGER,
    refunded_at         INTEGER,
    kind                TEXT NOT NULL DEFAULT 'purchase' CHECK (kind IN ('purchase', 'top_up')),
    topup_key_id        TEXT REFERENCES keys (id),
    lang                TEXT NOT NULL DEFAULT 'en' CHECK (lang IN ('en', 'zh')),
    upgraded_from       TEXT,
    refunded_nanos      INTEGER NOT NULL DEFAULT 0 CHECK (refunded_nanos >= 0)
);
INSERT INTO orders_new (order_id, plan, email, amount_nanos, currency, status, paypal_order_id,
        paypal_capture_id, key_id, browser_token_hash, created_at, paid_at, refunded_at, kind,
        topup_key_id, lang, upgraded_from, refunded_nanos)
    SELECT order_id, plan, email, amount_nanos, currency, status, paypal_order_id,
        paypal_capture_id, key_id, browser_token_hash, created_at, paid_at, refunded_at, kind,
        topup_key_id, lang, upgraded_from, refunded_nanos
    FROM orders;
DROP TABLE orders;
ALTER TABLE orders_new RENAME TO orders;
CREATE INDEX orders_by_time ON orders (created_at);
CREATE INDEX orders_by_topup_key ON orders (topup_key_id) WHERE topup_key_id IS NOT NULL;
