-- Keys, the usage ledger, and top-ups. Money is integer nano-USD; times are unix milliseconds.
CREATE TABLE keys (
    id            TEXT PRIMARY KEY,
    hash          BLOB NOT NULL UNIQUE,
    sealed        BLOB NOT NULL,
    prefix        TEXT NOT NULL,
    plan          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'exhausted', 'revoked')),
    budget_nanos  INTEGER NOT NULL CHECK (budget_nanos >= 0),
    spent_nanos   INTEGER NOT NULL DEFAULT 0 CHECK (spent_nanos >= 0),
    requests      INTEGER NOT NULL DEFAULT 0,
    email         TEXT,
    note          TEXT,
    order_id      TEXT UNIQUE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);

CREATE TABLE usage (
    id                  INTEGER PRIMARY KEY,
    request_id          TEXT NOT NULL UNIQUE,
    key_id              TEXT NOT NULL REFERENCES keys (id),
    model               TEXT NOT NULL,
    stream              INTEGER NOT NULL,
    period              TEXT NOT NULL CHECK (period IN ('off_peak', 'peak')),
    prompt_tokens       INTEGER NOT NULL,
    cache_hit_tokens    INTEGER NOT NULL,
    cache_miss_tokens   INTEGER NOT NULL,
    completion_tokens   INTEGER NOT NULL,
    reasoning_tokens    INTEGER NOT NULL,
    cost_nanos          INTEGER NOT NULL CHECK (cost_nanos >= 0),
    measured            TEXT NOT NULL CHECK (measured IN ('provider', 'estimated')),
    status              INTEGER NOT NULL,
    finish              TEXT NOT NULL,
    latency_ms          INTEGER NOT NULL,
    ttft_ms             INTEGER,
    created_at          INTEGER NOT NULL
);
CREATE INDEX usage_by_key_time ON usage (key_id, created_at);

CREATE TABLE topups (
    id            INTEGER PRIMARY KEY,
    key_id        TEXT NOT NULL REFERENCES keys (id),
    amount_nanos  INTEGER NOT NULL CHECK (amount_nanos > 0),
    created_at    INTEGER NOT NULL
);
