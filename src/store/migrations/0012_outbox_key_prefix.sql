-- The key's display prefix when a key's mail was queued: a notice names the key as it was at
-- the event (a rotation notice, the text the rotation made), not as it is when the mail is
-- finally sent. NULL for receipts and for mails queued before this migration (the key's
-- prefix at sending, as before).
ALTER TABLE outbox ADD COLUMN key_prefix TEXT;
