-- An account the operator disabled is remembered with a fingerprint of the DeepSeek key it had
-- (SHA-256 of the key, hex): an account given a new key under the same name — the usual fix
-- for the key that made the operator disable it — starts in service, not disabled by a flag
-- meant for the old key (found by an independent check). Flags recorded before have none and
-- apply to the name, as before.
ALTER TABLE upstream_disabled ADD COLUMN key_sha256 TEXT;
