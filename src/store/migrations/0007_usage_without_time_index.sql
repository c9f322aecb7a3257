-- Speed only. Every ledger row was written into three indexes; the one on `created_at` alone
-- served two rare reads of every key's rows by time (the console's totals of the day and the
-- requests settled around a moment, read when the console's tracker reloads), and cost each
-- one-row commit a B-tree insert and a page more in the WAL (bench/PROFILE.md). Those reads
-- now go key by key (`store/usage.rs`), through an index by key and time that also holds the
-- cost, so summing a key's spend over a time range never reads the table itself (1M rows over
-- 5 000 keys, a day's totals: 160 ms by the time index, 73 ms this way).
DROP INDEX IF EXISTS usage_by_time;
DROP INDEX IF EXISTS usage_by_key_time;
CREATE INDEX usage_by_key_time_cost ON usage (key_id, created_at, cost_nanos);
