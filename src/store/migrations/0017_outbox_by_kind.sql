-- Replacement notices of the last day found by kind and time: an address's are counted under
-- every spelling of it (case, Unicode forms, its domain's ASCII form), which the index by
-- recipient cannot find (found by an independent check: variants of one address got a day's
-- worth of notices each).
CREATE INDEX outbox_by_kind ON outbox (kind, created_at);
