//! Embedded migrations, applied at start-up.

use super::error::StoreError;

/// Migrations, in order; an applied migration is never edited, a change is a new file.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_orders.sql")),
    (3, include_str!("migrations/0003_usage_by_time.sql")),
    (4, include_str!("migrations/0004_ledger_api_account.sql")),
    (5, include_str!("migrations/0005_self_service.sql")),
    (
        6,
        include_str!("migrations/0006_usage_check_without_in_list.sql"),
    ),
    (
        7,
        include_str!("migrations/0007_usage_without_time_index.sql"),
    ),
    (8, include_str!("migrations/0008_order_refunded_amount.sql")),
    (9, include_str!("migrations/0009_rotation_requests.sql")),
    (10, include_str!("migrations/0010_upstream_disabled.sql")),
    (11, include_str!("migrations/0011_order_review.sql")),
    (12, include_str!("migrations/0012_outbox_key_prefix.sql")),
    (13, include_str!("migrations/0013_key_token_totals.sql")),
    (
        14,
        include_str!("migrations/0014_usage_index_with_model.sql"),
    ),
    (
        15,
        include_str!("migrations/0015_upstream_disabled_key.sql"),
    ),
    (16, include_str!("migrations/0016_outbox_by_key.sql")),
    (17, include_str!("migrations/0017_outbox_by_kind.sql")),
    (18, include_str!("migrations/0018_order_paypal_app.sql")),
];

/// How much longer systemd is asked to wait for the start, before each migration.
const MIGRATION_GRACE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Apply the migrations not applied yet, each in its own transaction. A database that has
/// migrations this version does not know (written by a newer modelrelay, then rolled back)
/// is refused: this version would misread what those changed.
pub(super) fn migrate(c: &mut rusqlite::Connection) -> Result<(), StoreError> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let newest: Option<i64> =
        c.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })?;
    let known = MIGRATIONS.last().map_or(0, |&(v, _)| v);
    if let Some(found) = newest.filter(|&v| v > known) {
        return Err(StoreError::NewerDatabase { found, known });
    }
    // A new database takes every migration in a moment: said once, not once a migration
    // (eleven lines on a first start, each warning of minutes; found by an independent check).
    let fresh = newest.is_none();
    if fresh {
        tracing::info!(migrations = MIGRATIONS.len(), "creating the database");
    }
    for &(version, sql) in MIGRATIONS {
        let tx = c.transaction()?;
        let done: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [version],
            |r| r.get(0),
        )?;
        if !done {
            // Some rebuild the ledger: minutes on millions of rows. Said before, not only
            // after, and systemd (Type=notify) is asked to wait for it rather than kill a
            // start that is working.
            if !fresh {
                tracing::info!(
                    version,
                    "applying database migration (on a large ledger this can take minutes)"
                );
            }
            crate::notify::send(&format!(
                "EXTEND_TIMEOUT_USEC={}\nSTATUS=applying database migration {version}",
                MIGRATION_GRACE.as_micros()
            ));
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                rusqlite::params![version, chrono::Utc::now().timestamp_millis()],
            )?;
            if !fresh {
                tracing::info!(version, "applied database migration");
            }
        }
        tx.commit()?;
    }
    Ok(())
}
