//! A batch meeting a failure of the moment (a full disk: SQLite's `max_page_count`, which fails
//! a write that needs a new page with `SQLITE_FULL` as a full file system does; a write lock
//! held by another connection) is retried and, until it commits, leaves its journaled rows
//! unsettled; a write the database refuses for good fails alone, as before.

use std::sync::Arc;

use rusqlite::Connection;

use super::*;
use crate::store::journal::{Journal, Segment};
use crate::store::tests::{key, usage};
use crate::store::{keys, migrate};

fn open(dir: &tempfile::TempDir) -> Connection {
    let mut c = Connection::open(dir.path().join("modelrelay.db")).unwrap();
    // A lock held elsewhere fails a write at once (rusqlite's default is to wait 5 s).
    c.busy_timeout(std::time::Duration::ZERO).unwrap();
    c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
        .unwrap();
    migrate::migrate(&mut c).unwrap();
    keys::insert(&c, &key("key_a", 7)).unwrap();
    c
}

/// A ledger row of `cost_nanos`.
fn row(request_id: &str, key_id: &str, cost_nanos: i64) -> UsageRow {
    usage(request_id, key_id, cost_nanos, 1_700_000_000_500)
}

/// A request id long enough to need new pages (overflow pages) to store.
fn big_id(n: u8) -> String {
    format!("req_{n}_{}", "x".repeat(200_000))
}

/// The database can grow by no page from now on.
fn fill_disk(c: &Connection) {
    let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
        .unwrap();
}

fn free_disk(c: &Connection) {
    c.query_row("PRAGMA max_page_count = 1000000", [], |_| Ok(()))
        .unwrap();
}

fn ledger(c: &Connection) -> (i64, i64, i64) {
    c.query_row(
        "SELECT (SELECT count(*) FROM usage), spent_nanos, requests FROM keys WHERE id = 'key_a'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

/// Both orders: the full disk met in the first pass (no savepoints), or in the replay with a
/// savepoint per write that follows a refusal.
#[test]
fn a_full_disk_fails_the_attempt_and_a_refusal_fails_alone() {
    let big = || Write::Usage(Box::new(row(&big_id(1), "key_a", 100)));
    // Refused for good: no such key.
    let ghost = || Write::Usage(Box::new(row("req_ghost", "key_ghost", 5)));
    let small = || Write::Usage(Box::new(row("req_2", "key_a", 200)));
    for (writes, refused_at) in [
        (vec![big(), ghost(), small()], 1),
        (vec![ghost(), big(), small()], 0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let c = open(&dir);
        let mut stmts = Statements::prepare(&c).unwrap();

        fill_disk(&c);
        let err = try_commit(&c, &mut stmts, &writes).unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(c.is_autocommit(), "the attempt is rolled back");
        assert_eq!(ledger(&c), (0, 0, 0));

        free_disk(&c);
        let results = try_commit(&c, &mut stmts, &writes).unwrap();
        for (i, r) in results.iter().enumerate() {
            if i == refused_at {
                let refused = r.as_ref().unwrap_err();
                assert!(!refused.is_transient(), "{refused}");
            } else {
                assert!(r.is_ok(), "{r:?}");
            }
        }
        assert_eq!(ledger(&c), (2, 300, 2));
    }
}

/// Another connection holding the database's write lock (the operator's `sqlite3` shell in a
/// transaction, say): every write meets `SQLITE_BUSY` (this connection has no busy timeout),
/// which, unlike a full disk, leaves the transaction open, so only the error's kind tells a
/// lock from a refusal.
#[test]
fn journaled_rows_of_a_batch_that_never_commits_stay_in_their_segment() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir);
    let mut stmts = Statements::prepare(&c).unwrap();
    let journal = Journal::start(&dir.path().join("journal"), false).unwrap();
    // A row the database refuses for good (no such key) first: the batch is then replayed
    // with a savepoint per write, where the lock is met again.
    let rows = [row("req_ghost", "key_ghost", 5), row("req_1", "key_a", 100)];
    let segment = rows
        .iter()
        .map(|r| journal.append(r).unwrap().segment)
        .last()
        .unwrap();
    // Only this test's handle on the segment is left besides the batch's.
    drop(journal);
    let batch = || {
        rows.iter()
            .map(|u| {
                let ack = Ack::Journaled(segment.clone(), None, true, None);
                (Write::Usage(Box::new(u.clone())), ack)
            })
            .collect::<Vec<_>>()
    };

    // Every retry meets the lock: the batch is given up and neither row is settled, so the
    // segment stays for the next start's replay.
    let other = Connection::open(dir.path().join("modelrelay.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut on_disk = None;
    let failing = std::sync::atomic::AtomicBool::new(false);
    let Err(kept) = commit_batch(&c, &mut stmts, batch(), false, &mut on_disk, true, &failing)
    else {
        panic!("committed through the lock");
    };
    assert_eq!(
        kept.len(),
        2,
        "both journaled rows are kept for a later batch"
    );
    assert!(
        failing.load(std::sync::atomic::Ordering::Acquire),
        "told at the first failed attempt"
    );
    assert!(
        !Segment::drained(&segment),
        "a row never committed was counted settled"
    );
    other.execute_batch("COMMIT").unwrap();
    assert_eq!(ledger(&c), (0, 0, 0));

    // The lock is gone: the kept rows go with the next batch, and the refused row and the
    // committed one both settle.
    assert!(commit_batch(&c, &mut stmts, kept, false, &mut on_disk, true, &failing).is_ok());
    assert_eq!(ledger(&c), (1, 100, 1));
    assert_eq!(Arc::strong_count(&segment), 1);
    assert!(Segment::drained(&segment));
}
