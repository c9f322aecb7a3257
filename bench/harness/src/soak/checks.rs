//! The invariants at the end of the run, with their figures: the books of every key in memory
//! (the admin socket) and on disk (the database, opened read-only beside the running daemon,
//! then again after it stopped), the orders, the ledger rows of the answered requests, the
//! surprises met on the way, and the daemon's exit.

use std::collections::{HashMap, HashSet};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::Context;
use modelrelay::activity::protocol::KeyView;
use modelrelay::money::Usd;
use rusqlite::{Connection, OpenFlags};

use super::verdict::Verdict;
use super::world::World;

/// A key's books in the database.
#[derive(Clone, Debug, Default)]
struct Books {
    budget: i64,
    spent: i64,
    ledger: i64,
    rows: i64,
    history: i64,
}

fn open(world: &World) -> anyhow::Result<Connection> {
    let db = world.paths.data.join("modelrelay.db");
    Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("open {} read-only", db.display()))
}

fn books(db: &Connection) -> anyhow::Result<HashMap<String, Books>> {
    let mut q = db.prepare(
        "SELECT k.id, k.budget_nanos, k.spent_nanos,
                (SELECT COALESCE(SUM(u.cost_nanos), 0) FROM usage u WHERE u.key_id = k.id),
                (SELECT COUNT(*) FROM usage u WHERE u.key_id = k.id),
                (SELECT COALESCE(SUM(h.amount_nanos), 0) FROM budget_history h
                  WHERE h.key_id = k.id)
         FROM keys k",
    )?;
    let rows = q.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Books {
                budget: r.get(1)?,
                spent: r.get(2)?,
                ledger: r.get(3)?,
                rows: r.get(4)?,
                history: r.get(5)?,
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn one_count(db: &Connection, sql: &str) -> anyhow::Result<i64> {
    Ok(db.query_row(sql, [], |r| r.get(0))?)
}

/// The first few offenders, for a figure.
fn offenders(v: &[String]) -> String {
    if v.is_empty() {
        return "0".to_owned();
    }
    let shown: Vec<&str> = v.iter().take(3).map(String::as_str).collect();
    format!("{} ({})", v.len(), shown.join("; "))
}

/// After the load drained and before the daemon stops: wait for every hold to be released and
/// every settlement on disk, then check the books; the keys in memory as they were.
pub async fn settle_and_check(world: &World, v: &mut Verdict) -> anyhow::Result<Vec<KeyView>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mem, db_books) = loop {
        let mem = world.key_views().await?;
        let db = books(&open(world)?)?;
        let held = mem.iter().any(|k| k.held_usd != Usd::ZERO);
        let behind = mem
            .iter()
            .any(|k| db.get(&k.id).is_none_or(|b| b.spent != k.spent_usd.nanos()));
        if (!held && !behind) || Instant::now() > deadline {
            break (mem, db);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let held: Vec<String> = mem
        .iter()
        .filter(|k| k.held_usd != Usd::ZERO)
        .map(|k| format!("{} holds {}", k.id, k.held_usd))
        .collect();
    v.add(
        "nothing held once the load drained",
        format!("{} keys, holding: {}", mem.len(), offenders(&held)),
        held.is_empty(),
    );

    let mut ledger_off = Vec::new();
    let mut memory_off = Vec::new();
    let mut negative = Vec::new();
    let mut budget_off = Vec::new();
    let mut rows_off = Vec::new();
    let (mut rows, mut spent) = (0i64, 0i64);
    let mut min_remaining = i64::MAX;
    for k in &mem {
        let b = db_books.get(&k.id).cloned().unwrap_or_default();
        rows += b.rows;
        spent += b.spent;
        if b.spent != b.ledger {
            ledger_off.push(format!(
                "{}: spent {} ≠ Σ ledger {}",
                k.id, b.spent, b.ledger
            ));
        }
        if b.spent != k.spent_usd.nanos() || b.budget != k.budget_usd.nanos() {
            memory_off.push(format!(
                "{}: memory {}/{} disk {}/{}",
                k.id,
                k.spent_usd.nanos(),
                k.budget_usd.nanos(),
                b.spent,
                b.budget
            ));
        }
        let remaining = k.remaining_usd.nanos().min(b.budget - b.spent);
        min_remaining = min_remaining.min(remaining);
        if remaining < 0 {
            negative.push(format!("{}: {remaining}", k.id));
        }
        if b.budget != b.history {
            budget_off.push(format!(
                "{}: budget {} ≠ Σ history {}",
                k.id, b.budget, b.history
            ));
        }
        if u64::try_from(b.rows).ok() != Some(k.requests) {
            rows_off.push(format!(
                "{}: {} rows, {} requests",
                k.id, b.rows, k.requests
            ));
        }
    }
    let total = Usd::from_nanos(spent);
    v.add(
        "spent == Σ ledger cost, every key (database)",
        format!(
            "{} keys, {rows} ledger rows, {total} spent; mismatches: {}",
            mem.len(),
            offenders(&ledger_off)
        ),
        ledger_off.is_empty(),
    );
    v.add(
        "spent and budget in memory == on disk, every key",
        format!("mismatches: {}", offenders(&memory_off)),
        memory_off.is_empty(),
    );
    v.add(
        "no negative balance (memory and disk)",
        format!(
            "lowest remaining {}; negative: {}",
            Usd::from_nanos(min_remaining),
            offenders(&negative)
        ),
        negative.is_empty(),
    );
    v.add(
        "settled requests in memory == ledger rows, every key",
        format!("mismatches: {}", offenders(&rows_off)),
        rows_off.is_empty(),
    );
    v.add(
        "budget == Σ budget history, every key",
        format!("mismatches: {}", offenders(&budget_off)),
        budget_off.is_empty(),
    );
    expected_budgets(world, &mem, v);
    orders(world, v)?;
    billed(world, v)?;
    surprises(world, v);
    Ok(mem)
}

/// Each key's budget is what the soak gave it: its first budget and every top-up it completed.
fn expected_budgets(world: &World, mem: &[KeyView], v: &mut Verdict) {
    let by_id: HashMap<&str, &KeyView> = mem.iter().map(|k| (k.id.as_str(), k)).collect();
    let mut off = Vec::new();
    let slots = world.keys.all();
    for s in &slots {
        match by_id.get(s.id.as_str()) {
            Some(k) if k.budget_usd.nanos() == s.budget_nanos => {}
            Some(k) => off.push(format!(
                "{}: {} ≠ {}",
                s.id,
                k.budget_usd,
                Usd::from_nanos(s.budget_nanos)
            )),
            None => off.push(format!("{}: missing", s.id)),
        }
    }
    v.add(
        "every key's budget == what the soak granted and topped up",
        format!(
            "{} keys followed; mismatches: {}",
            slots.len(),
            offenders(&off)
        ),
        off.is_empty(),
    );
}

/// One key per paid purchase, one budget increase per paid top-up, and the soak's orders all paid.
fn orders(world: &World, v: &mut Verdict) -> anyhow::Result<()> {
    let db = open(world)?;
    let paid = one_count(
        &db,
        "SELECT COUNT(*) FROM orders WHERE status = 'paid' AND kind = 'purchase'",
    )?;
    let bad_purchases = one_count(
        &db,
        "SELECT COUNT(*) FROM orders o WHERE o.status = 'paid' AND o.kind = 'purchase'
           AND ((SELECT COUNT(*) FROM keys k WHERE k.order_id = o.order_id) != 1
                OR o.key_id IS NULL
                OR o.key_id != (SELECT k.id FROM keys k WHERE k.order_id = o.order_id))",
    )?;
    let stray_keys = one_count(
        &db,
        "SELECT COUNT(*) FROM keys k WHERE k.order_id IS NOT NULL AND NOT EXISTS
           (SELECT 1 FROM orders o WHERE o.order_id = k.order_id AND o.status = 'paid')",
    )?;
    let top_ups = one_count(
        &db,
        "SELECT COUNT(*) FROM orders WHERE status = 'paid' AND kind = 'top_up'",
    )?;
    let bad_top_ups = one_count(
        &db,
        "SELECT COUNT(*) FROM orders o WHERE o.status = 'paid' AND o.kind = 'top_up'
           AND (SELECT COUNT(*) FROM budget_history h
                 WHERE h.order_id = o.order_id AND h.kind = 'top_up'
                   AND h.key_id = o.topup_key_id) != 1",
    )?;
    let mine = world.orders();
    let bought = mine.iter().filter(|o| !o.top_up).count() as i64;
    let topped = mine.len() as i64 - bought;
    let mut unpaid = Vec::new();
    for o in &mine {
        let (status, key): (String, Option<String>) = db.query_row(
            "SELECT status, CASE kind WHEN 'top_up' THEN topup_key_id ELSE key_id END
               FROM orders WHERE order_id = ?1",
            [&o.order_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if status != "paid" || key.as_deref() != Some(o.key_id.as_str()) {
            unpaid.push(format!("{}: {status}, key {key:?}", o.order_id));
        }
    }
    v.add(
        "one key per paid order",
        format!(
            "{paid} paid purchases (the soak made {bought}); orders without exactly one key: \
             {bad_purchases}; keys of an unpaid order: {stray_keys}"
        ),
        bad_purchases == 0 && stray_keys == 0 && paid == bought,
    );
    v.add(
        "one budget increase per paid top-up",
        format!("{top_ups} paid top-ups (the soak made {topped}); without exactly one increase: {bad_top_ups}"),
        bad_top_ups == 0 && top_ups == topped,
    );
    v.add(
        "every order the soak paid for is paid, for its key",
        format!("{} orders; otherwise: {}", mine.len(), offenders(&unpaid)),
        unpaid.is_empty(),
    );
    Ok(())
}

/// Every request answered (or abandoned after its headers) has its ledger row.
fn billed(world: &World, v: &mut Verdict) -> anyhow::Result<()> {
    let db = open(world)?;
    let mut q = db.prepare("SELECT request_id FROM usage")?;
    let ids: HashSet<String> = q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let want = world.tally.billed();
    let missing: Vec<String> = want
        .iter()
        .filter(|id| !ids.contains(*id))
        .cloned()
        .collect();
    v.add(
        "every answered request has its ledger row",
        format!(
            "{} request ids checked; missing: {}",
            want.len(),
            offenders(&missing)
        ),
        missing.is_empty(),
    );
    Ok(())
}

/// Nothing the contract forbids happened during the load.
fn surprises(world: &World, v: &mut Verdict) {
    let undocumented = world.tally.event_count("undocumented 5xx");
    let documented: u64 = world
        .tally
        .requests()
        .iter()
        .filter(|((_, o), _)| o.starts_with('5'))
        .map(|(_, n)| n)
        .sum();
    v.add(
        "no 5xx but 502/503/504 with their documented codes",
        format!("{documented} documented upstream 5xx; others: {undocumented}"),
        undocumented == 0,
    );
    let (n, first) = world.tally.surprises();
    v.add(
        "no surprise during the load (any answer or command the contract does not allow)",
        format!(
            "{n} surprises{}",
            if first.is_empty() {
                String::new()
            } else {
                format!("; first: {}", first[0])
            }
        ),
        n == 0,
    );
}

/// After SIGTERM: exit 0, no panic in the log, and the books on disk as memory had them.
pub fn after_exit(
    world: &World,
    exit: anyhow::Result<ExitStatus>,
    mem: &[KeyView],
    v: &mut Verdict,
) -> anyhow::Result<()> {
    let (ok, figures) = match &exit {
        Ok(s) => (s.code() == Some(0), s.to_string()),
        Err(e) => (false, format!("{e:#}")),
    };
    v.add("SIGTERM: the daemon exits 0", figures, ok);
    let log = std::fs::read_to_string(&world.paths.log).unwrap_or_default();
    let starts = log.matches("modelrelay started").count();
    let panics = log.matches("panicked").count();
    v.add(
        "the daemon never crashed or restarted",
        format!(
            "same pid {} throughout; {starts} start in its log, {panics} panics",
            world.daemon_pid()
        ),
        starts == 1 && panics == 0 && world.tally.event_count("daemon exited") == 0,
    );
    let db = books(&open(world)?)?;
    let changed: Vec<String> = mem
        .iter()
        .filter(|k| {
            db.get(&k.id)
                .is_none_or(|b| b.spent != k.spent_usd.nanos() || b.budget != k.budget_usd.nanos())
        })
        .map(|k| k.id.clone())
        .collect();
    v.add(
        "after the stop, the books on disk == memory before it",
        format!("{} keys; differing: {}", mem.len(), offenders(&changed)),
        changed.is_empty(),
    );
    Ok(())
}
