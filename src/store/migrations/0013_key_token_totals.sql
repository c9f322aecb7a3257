-- Each key's token totals kept with its other counters, moved by the ledger writer with them
-- (one UPDATE per key per batch), so a customer's dashboard and GET /api/usage read one row
-- instead of summing the key's whole ledger (~1.6 µs a row: 0.8 s for a key of 470 000 rows,
-- and a few customers asking at once held the one read connection for seconds; found by an
-- independent check at a year's scale). Each row counts for at most 2^40 tokens, as the sums
-- did; a total stops at 2^62.
ALTER TABLE keys ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN cache_hit_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN cache_miss_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
UPDATE keys SET (prompt_tokens, cache_hit_tokens, cache_miss_tokens, completion_tokens,
                 reasoning_tokens) = (
    SELECT min(coalesce(sum(min(u.prompt_tokens, 1099511627776)), 0), 4611686018427387904),
           min(coalesce(sum(min(u.cache_hit_tokens, 1099511627776)), 0), 4611686018427387904),
           min(coalesce(sum(min(u.cache_miss_tokens, 1099511627776)), 0), 4611686018427387904),
           min(coalesce(sum(min(u.completion_tokens, 1099511627776)), 0), 4611686018427387904),
           min(coalesce(sum(min(u.reasoning_tokens, 1099511627776)), 0), 4611686018427387904)
    FROM usage u WHERE u.key_id = keys.id);
