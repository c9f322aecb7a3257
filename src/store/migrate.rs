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
];

/// Apply the migrations not applied yet, each in its own transaction.
pub(super) fn migrate(c: &mut rusqlite::Connection) -> Result<(), StoreError> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    for &(version, sql) in MIGRATIONS {
        let tx = c.transaction()?;
        let done: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [version],
            |r| r.get(0),
        )?;
        if !done {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                rusqlite::params![version, chrono::Utc::now().timestamp_millis()],
            )?;
            tracing::info!(version, "applied database migration");
        }
        tx.commit()?;
    }
    Ok(())
}
