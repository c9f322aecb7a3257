//! The upstream's bad days and the operator's habits.
//!
//! [`account_faults`]: every 20 s one of the two DeepSeek accounts fails as a whole for 6 s —
//! 500, 503, 429, slow (1.5 s before each answer), hung (no byte until the gateway's 3 s idle
//! timeout), or refused (401, which disables the account until the operator runs
//! `modelrelay upstream enable`). The other account carries the load meanwhile (failover,
//! cooling and the trial that ends it).
//!
//! [`operator`]: every 10 s one `modelrelay` command against the running daemon, in turn —
//! `keys list --json` (checked: nothing negative), `keys create` of a small key, `keys topup`,
//! `keys rotate` of a big key, `orders list --json`, `upstream status --json`, `backup`.

use std::sync::Arc;
use std::time::Duration;

use modelrelay::money::Usd;
use modelrelay::upstream::simulated::AccountFault;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::daemon::{ACCOUNTS, TRIAL_BUDGET};
use super::keys::Tier;
use super::world::World;

/// The account faults, in turn.
const FAULTS: [(&str, AccountFault); 6] = [
    ("500", AccountFault::Status(500)),
    ("503", AccountFault::Status(503)),
    ("429", AccountFault::Status(429)),
    (
        "slow 1.5 s",
        AccountFault::Delay(Duration::from_millis(1500)),
    ),
    ("hung", AccountFault::Hang),
    ("401 (disables)", AccountFault::Status(401)),
];

/// Impose a fault on one account at a time, for a while, until the load stops.
pub async fn account_faults(world: Arc<World>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
    let mut turn = 0usize;
    while world.pause(Duration::from_secs(14)).await {
        let (name, fault) = FAULTS[turn % FAULTS.len()];
        let (account, key) = ACCOUNTS[rng.random_range(0..ACCOUNTS.len())];
        turn += 1;
        world.sim.set_fault(key, Some(fault));
        world.tally.event(&format!("account fault: {name}"));
        let _ = world.pause(Duration::from_secs(6)).await;
        world.sim.set_fault(key, None);
        if matches!(fault, AccountFault::Status(401)) {
            // DeepSeek refused the account: it stays disabled until the operator says so.
            match world.cli(&["upstream", "enable", account]).await {
                Ok(_) => world.tally.event("cli: upstream enable"),
                Err(e) => world.tally.surprise(format!("upstream enable: {e:#}")),
            }
        }
    }
}

/// One operator command every 10 s, in turn, until the load stops.
pub async fn operator(world: Arc<World>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x09e7);
    let mut turn = 0usize;
    while world.pause(Duration::from_secs(10)).await {
        let (name, result) = match turn % 7 {
            0 => ("keys list", keys_list(&world).await),
            1 => ("keys create", keys_create(&world).await),
            2 => ("keys topup", keys_topup(&world, &mut rng).await),
            3 => ("keys rotate", keys_rotate(&world, &mut rng).await),
            4 => (
                "orders list",
                json_of(&world, &["orders", "list", "--json"]).await,
            ),
            5 => (
                "upstream status",
                json_of(&world, &["upstream", "status", "--json"]).await,
            ),
            _ => ("backup", backup(&world, turn).await),
        };
        turn += 1;
        match result {
            Ok(()) => world.tally.event(&format!("cli: {name}")),
            Err(e) => world.tally.surprise(format!("cli {name}: {e:#}")),
        }
    }
}

/// `keys list --json`: one document, every key with a remaining balance not below zero.
async fn keys_list(world: &World) -> anyhow::Result<()> {
    let out = world.cli(&["keys", "list", "--json"]).await?;
    let keys: Vec<Value> = serde_json::from_str(&out)?;
    for k in &keys {
        let remaining: Usd = k["remaining_usd"].as_str().unwrap_or("?").parse()?;
        anyhow::ensure!(
            !remaining.is_negative(),
            "a key with remaining {remaining}: {k}"
        );
    }
    anyhow::ensure!(!keys.is_empty(), "no keys listed");
    Ok(())
}

/// A command whose output must be one JSON document.
async fn json_of(world: &World, args: &[&str]) -> anyhow::Result<()> {
    let out = world.cli(args).await?;
    serde_json::from_str::<Value>(&out)?;
    Ok(())
}

/// `keys create --plan trial --budget …`: a new small key joins the load.
async fn keys_create(world: &World) -> anyhow::Result<()> {
    let out = world
        .cli(&[
            "keys",
            "create",
            "--plan",
            "trial",
            "--budget",
            TRIAL_BUDGET,
            "--note",
            "soak cli",
            "--json",
        ])
        .await?;
    let v: Value = serde_json::from_str(&out)?;
    let text = v["api_key"].as_str().unwrap_or_default().to_owned();
    let id = v["key"]["id"].as_str().unwrap_or_default().to_owned();
    anyhow::ensure!(text.starts_with("sk-gateway-") && !id.is_empty(), "{v}");
    let budget: Usd = TRIAL_BUDGET.parse()?;
    world.keys.add(id, text, Tier::Small, budget.nanos());
    Ok(())
}

/// `keys topup ID --usd …` of a small key (the operator's gesture of goodwill).
async fn keys_topup(world: &World, rng: &mut StdRng) -> anyhow::Result<()> {
    let key = world
        .keys
        .pick(Tier::Small, rng)
        .ok_or_else(|| anyhow::anyhow!("no small key"))?;
    let id = world.keys.all()[key.index].id.clone();
    world
        .cli(&["keys", "topup", &id, "--usd", TRIAL_BUDGET])
        .await?;
    let amount: Usd = TRIAL_BUDGET.parse()?;
    world.keys.credit(key.index, amount.nanos());
    Ok(())
}

/// `keys rotate ID` of a big key, under load: its new text is used from the answer on.
async fn keys_rotate(world: &World, rng: &mut StdRng) -> anyhow::Result<()> {
    let key = world
        .keys
        .pick(Tier::Big, rng)
        .ok_or_else(|| anyhow::anyhow!("no big key"))?;
    let id = world.keys.all()[key.index].id.clone();
    if world.keys.begin_rotation(key.index).is_none() {
        // A customer is replacing that one right now.
        return Ok(());
    }
    let out = world.cli(&["keys", "rotate", &id]).await;
    let text = out.as_ref().ok().map(|t| t.trim().to_owned());
    world.keys.end_rotation(key.index, text.clone());
    let text = text.unwrap_or_default();
    out?;
    anyhow::ensure!(text.starts_with("sk-gateway-"), "rotate printed {text:?}");
    Ok(())
}

/// `backup FILE`: a consistent copy of the database while the load runs.
async fn backup(world: &World, turn: usize) -> anyhow::Result<()> {
    let file = world.paths.work.join(format!("backup-{turn}.db"));
    let file = file.display().to_string();
    world.cli(&["backup", &file]).await?;
    anyhow::ensure!(std::fs::metadata(&file)?.len() > 0, "empty backup");
    // The copy has served its purpose; keep the disk from filling on a long run.
    std::fs::remove_file(&file)?;
    Ok(())
}
