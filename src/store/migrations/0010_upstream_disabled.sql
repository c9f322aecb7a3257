-- The upstream accounts the operator took out of service (`modelrelay upstream disable`, the
-- console): they stay out after a restart until enabled. By the account's name in the config.
CREATE TABLE upstream_disabled (
    name        TEXT PRIMARY KEY,
    disabled_at INTEGER NOT NULL
);
