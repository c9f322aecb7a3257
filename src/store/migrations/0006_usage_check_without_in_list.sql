-- Speed only; the rules are the same. SQLite compiles a CHECK with `IN` over three or more
-- values into a temporary index built and dropped on every INSERT: `measured IN ('provider',
-- 'estimated', 'clamped')` cost ~5 400 instructions per ledger row, ~2 % of a whole request
-- (callgrind, bench/PROFILE.md). Comparisons joined by OR check the same thing without it.
-- SQLite cannot change a CHECK in place, so the table is rebuilt, once (rows keep their ids).
CREATE TABLE usage_new (
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
    measured            TEXT NOT NULL CHECK (measured = 'provider' OR measured = 'estimated'
                                             OR measured = 'clamped'),
    status              INTEGER NOT NULL,
    finish              TEXT NOT NULL,
    latency_ms          INTEGER NOT NULL,
    ttft_ms             INTEGER,
    created_at          INTEGER NOT NULL,
    api                 TEXT NOT NULL DEFAULT 'openai' CHECK (api IN ('openai', 'anthropic')),
    account             TEXT NOT NULL DEFAULT ''
);
INSERT INTO usage_new (id, request_id, key_id, model, stream, period, prompt_tokens,
        cache_hit_tokens, cache_miss_tokens, completion_tokens, reasoning_tokens, cost_nanos,
        measured, status, finish, latency_ms, ttft_ms, created_at, api, account)
    SELECT id, request_id, key_id, model, stream, period, prompt_tokens, cache_hit_tokens,
        cache_miss_tokens, completion_tokens, reasoning_tokens, cost_nanos, measured, status,
        finish, latency_ms, ttft_ms, created_at, api, account
    FROM usage;
DROP TABLE usage;
ALTER TABLE usage_new RENAME TO usage;
CREATE INDEX usage_by_key_time ON usage (key_id, created_at);
CREATE INDEX usage_by_time ON usage (created_at);
