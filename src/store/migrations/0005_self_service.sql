-- Self-service (issue 14): top-ups of an existing key, key rotation, a budget history, and
-- emailed receipts and notices through a durable outbox. Money is integer nano-USD; times are
-- unix milliseconds.

-- An order is a purchase (mints a key: `key_id`) or a top-up of an existing key
-- (`topup_key_id`; `key_id` stays NULL, since it is unique per key). `lang` is the language of
-- the page it was bought on (its mails use it); `upgraded_from` is the key's plan before a
-- top-up that moved it to a dearer plan (a refund moves it back).
ALTER TABLE orders ADD COLUMN kind TEXT NOT NULL DEFAULT 'purchase'
    CHECK (kind IN ('purchase', 'top_up'));
ALTER TABLE orders ADD COLUMN topup_key_id TEXT REFERENCES keys (id);
ALTER TABLE orders ADD COLUMN lang TEXT NOT NULL DEFAULT 'en' CHECK (lang IN ('en', 'zh'));
ALTER TABLE orders ADD COLUMN upgraded_from TEXT;
CREATE INDEX orders_by_topup_key ON orders (topup_key_id) WHERE topup_key_id IS NOT NULL;

-- When a key's text was last replaced (the order look-up then no longer shows it).
ALTER TABLE keys ADD COLUMN rotated_at INTEGER;

-- Every change of a key's budget, signed: what it was bought with, granted by hand, topped up
-- from the storefront or by the operator, taken back by a refund.
CREATE TABLE budget_history (
    id            INTEGER PRIMARY KEY,
    key_id        TEXT NOT NULL REFERENCES keys (id),
    kind          TEXT NOT NULL
                  CHECK (kind IN ('purchase', 'grant', 'top_up', 'operator_top_up', 'refund')),
    amount_nanos  INTEGER NOT NULL,
    order_id      TEXT,
    created_at    INTEGER NOT NULL
);
CREATE INDEX budget_history_by_key ON budget_history (key_id, created_at, id);

-- The history of the keys that exist already: what they started with (their budget less the
-- operator's top-ups), then each top-up.
INSERT INTO budget_history (key_id, kind, amount_nanos, order_id, created_at)
    SELECT k.id,
           CASE WHEN k.order_id IS NULL THEN 'grant' ELSE 'purchase' END,
           k.budget_nanos - COALESCE((SELECT sum(t.amount_nanos) FROM topups t WHERE t.key_id = k.id), 0),
           k.order_id,
           k.created_at
    FROM keys k;
INSERT INTO budget_history (key_id, kind, amount_nanos, created_at)
    SELECT key_id, 'operator_top_up', amount_nanos, created_at FROM topups ORDER BY id;

-- Per key: the language of its mails, the unguessable token of its opt-out link, whether the
-- low-balance and exhausted notices of the current crossing were queued (a top-up re-arms
-- them), and when its owner opted out of notices.
CREATE TABLE key_mail (
    key_id          TEXT PRIMARY KEY REFERENCES keys (id),
    lang            TEXT NOT NULL DEFAULT 'en' CHECK (lang IN ('en', 'zh')),
    token           TEXT NOT NULL UNIQUE,
    low_sent        INTEGER NOT NULL DEFAULT 0,
    exhausted_sent  INTEGER NOT NULL DEFAULT 0,
    opted_out_at    INTEGER
);
INSERT INTO key_mail (key_id, lang, token, exhausted_sent)
    SELECT id, 'en', lower(hex(randomblob(24))), status = 'exhausted' FROM keys;

-- Mail waiting to be sent, sent, or given up on. A message is rendered when it is sent, from
-- what it refers to (the order of a receipt, the key of a notice), in `lang`.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('receipt', 'low_balance', 'exhausted', 'rotated')),
    recipient        TEXT NOT NULL,
    lang             TEXT NOT NULL CHECK (lang IN ('en', 'zh')),
    key_id           TEXT,
    order_id         TEXT,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
