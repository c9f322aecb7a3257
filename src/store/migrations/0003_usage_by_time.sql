-- Today's totals for the console are summed over the ledger by time, for every key at once.
CREATE INDEX usage_by_time ON usage (created_at);
