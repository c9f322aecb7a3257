//! The command line: `serve`, `keys …`, `orders …`, `mail …`, `backup`, `check-config`, `console`. Output for people goes to
//! stdout (tables, or one JSON document with `--json`); errors go to stderr with exit code 1.
//!
//! A command's output is composed whole, then written once by [`output`], which takes a reader
//! that stops early (`modelrelay keys list | head`) in its stride, as `ls` does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::activity::client;
use crate::activity::protocol::{Request, Response};
use crate::config::{Config, SecretFiles};
use crate::money::Usd;
pub use out::command_line_error;
use out::{fail, output, print_json};
use tables::{key_card, keys_table, mail_table, order_card, orders_table, retried_failed_text};

mod log_line;
mod out;
mod requests;
mod serve;
mod tables;
mod upstream;

pub use upstream::{UpstreamArgs, UpstreamCommand};

/// The version and the commit it was built from (see `build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RELAY_BUILD_COMMIT"),
    ")"
);

/// modelrelay: sell DeepSeek through an OpenAI-compatible API on prepaid keys.
#[derive(Debug, Parser)]
#[command(name = "modelrelay", version = VERSION, about)]
pub struct Cli {
    /// Config file (default: $MODELRELAY_CONFIG, else ./modelrelay.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (HTTP gateway and admin socket).
    Serve {
        /// Use a simulated DeepSeek and a simulated PayPal on loopback instead of the real
        /// APIs (no account needed).
        #[arg(long)]
        demo: bool,
    },
    /// The operator's live console.
    Console {
        /// Admin socket (default: from config).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Manage API keys on the running daemon.
    Keys(KeysArgs),
    /// Look at orders on the running daemon.
    Orders(OrdersArgs),
    /// A key's latest requests (or one, by its id) as the ledger has them: tokens, cost, how
    /// each ended.
    Requests(requests::RequestsArgs),
    /// The outbox of receipts and notices on the running daemon.
    Mail(MailArgs),
    /// The pool of DeepSeek accounts on the running daemon.
    Upstream(UpstreamArgs),
    /// Validate the config and print it with secrets redacted.
    CheckConfig,
    /// Copy the running daemon's database to FILE (consistent online backup; never overwrites).
    Backup {
        /// Where the copy goes (written by the daemon, so its user must be able to write there).
        file: PathBuf,
        /// Admin socket (default: from config).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
}

/// `keys …`
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// Admin socket (default: from config).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print one JSON document.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// `orders …`
#[derive(Debug, Args)]
pub struct OrdersArgs {
    /// Admin socket (default: from config).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print one JSON document.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: OrdersCommand,
}

/// `mail …`
#[derive(Debug, Args)]
pub struct MailArgs {
    /// Admin socket (default: from config).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print one JSON document.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: MailCommand,
}

/// `mail` subcommands.
#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// The newest messages: queued, sent, failed.
    List {
        /// How many (1 to 10000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Queue a failed (or waiting) message again, now (a sent one is never sent again); with
    /// `--failed`, every failed message.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "failed"])))]
    Retry {
        /// The message's number (the ID column of `mail list`).
        id: Option<i64>,
        /// Every message given up (`failed`), once what failed them is mended; balance notices
        /// that must not go (opted out, revoked, topped up since) stay as they are.
        #[arg(long)]
        failed: bool,
    },
}

/// `orders` subcommands.
#[derive(Debug, Subcommand)]
pub enum OrdersCommand {
    /// The newest orders.
    List {
        /// How many (1 to 10000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// One order.
    Show {
        /// Order id (`ord_…`).
        order_id: String,
    },
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Mint a key; prints the full key alone on stdout.
    Create {
        /// Plan id (trial, starter, standard, pro…).
        #[arg(long)]
        plan: String,
        /// Customer's email.
        #[arg(long)]
        email: Option<String>,
        /// Budget in USD instead of the plan's, e.g. 2.50.
        // A negative figure reaches the amount's own message ("-5" was taken for an option).
        #[arg(long, value_name = "USD", allow_negative_numbers = true)]
        budget: Option<Usd>,
        /// A note for yourself.
        #[arg(long)]
        note: Option<String>,
    },
    /// Every key.
    List,
    /// One key (full key, id, or prefix).
    Show {
        /// Key, id or prefix.
        key: String,
    },
    /// Revoke a key.
    Revoke {
        /// Key, id or prefix.
        key: String,
    },
    /// Add budget to a key.
    Topup {
        /// Key, id or prefix.
        key: String,
        /// Amount in USD, e.g. 5.00.
        #[arg(long, value_name = "AMOUNT", allow_negative_numbers = true)]
        usd: Usd,
    },
    /// Replace a key's text (same id, plan, budget, history); prints the new key alone on
    /// stdout. The old text stops working at once.
    Rotate {
        /// Key, id or prefix.
        key: String,
    },
}

/// Structured logs to stderr (the journal under systemd): `RUST_LOG` if set and valid, else
/// `filter`, else info. One line per event, escaped (`log_line`), without colours.
fn init_logging(filter: &str) {
    let env_filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(log_line::SafeStderr)
        .with_ansi(false)
        // Its own failures would go to stderr with `eprintln!`, which panics when stderr fails
        // (see `log_line::SafeLine`, which takes every line anyway).
        .log_internal_errors(false)
        .try_init();
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    // Only `serve` uses the secrets; `check-config` reads them to check them (those systemd
    // provides to the service alone are warnings there), the admin commands leave them be.
    let secrets = match &cli.command {
        Command::Serve { demo: true } => SecretFiles::Demo,
        Command::Serve { .. } => SecretFiles::Read,
        Command::CheckConfig => SecretFiles::Check,
        _ => SecretFiles::Skip,
    };
    if !matches!(cli.command, Command::Serve { .. } | Command::CheckConfig)
        && let Some(why) = Config::foreign_local_file(cli.config.as_deref())
    {
        return fail(why);
    }
    let loaded = Config::load_with(cli.config.as_deref(), secrets);
    // `serve` logs at `server.log_level` (default info), the client commands at warn;
    // RUST_LOG, when set, wins over both.
    let filter = match (&cli.command, &loaded) {
        (Command::Serve { .. }, Ok(c)) => c.server.log_level.clone(),
        (Command::Serve { .. }, Err(_)) => "info".to_string(),
        _ => "warn".to_string(),
    };
    init_logging(&filter);
    // What an admin command needs: the socket and the plans' ids.
    let (config, socket, plans, mistake) = match loaded {
        Ok(c) => {
            let (socket, plans) = (c.admin_socket(), c.plans.keys().cloned().collect());
            (Some(c), socket, plans, None)
        }
        Err(e) => match (&cli.command, Config::admin_reach(cli.config.as_deref())) {
            // An admin command needs only the socket: a mistake elsewhere in the file is a
            // warning (the running daemon read the file as it was when it started).
            (Command::Serve { .. } | Command::CheckConfig, _) | (_, None) => {
                return fail(format_args!("configuration: {e}"));
            }
            (_, Some((socket, plans))) => {
                eprintln!(
                    "modelrelay: warning: the configuration has an error (`modelrelay \
                     check-config` shows it); reaching the daemon at {} all the same\n  {e}",
                    socket.display()
                );
                (None, socket, plans, Some(e.to_string()))
            }
        },
    };
    if let (Command::CheckConfig, Some(config)) = (&cli.command, &config) {
        for warning in config.warnings() {
            eprintln!("modelrelay: warning: {warning}");
        }
        return output(&config.redacted_toml());
    }
    // A new key's text is printed once: a `keys create` or `keys rotate` interrupted after its
    // request left (Ctrl-C or Ctrl-\, `timeout`'s SIGTERM, a hang-up) made a key nobody had the
    // text of — a rotated customer locked out (found by an independent check). Those signals
    // wait until the text is out; blocked before the runtime starts any thread, so every
    // thread inherits it. (The wait is bounded by the answer's own 60 s.)
    if let Command::Keys(args) = &cli.command
        && matches!(
            args.command,
            KeysCommand::Create { .. } | KeysCommand::Rotate { .. }
        )
    {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
        let mut held = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            held.add(s);
        }
        if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&held), None) {
            eprintln!("modelrelay: warning: cannot hold interrupts until the key is printed: {e}");
        }
    }
    let runtime = match cli.command {
        Command::Serve { .. } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => return fail(format_args!("cannot start the async runtime: {e}")),
    };
    match cli.command {
        Command::Serve { demo } => match config {
            Some(config) => runtime.block_on(serve::serve(config, demo)),
            None => fail("configuration: not loaded"),
        },
        Command::Console { socket: given } => {
            let path = given.unwrap_or(socket);
            // Printed above, then hidden by the console's screen: said there too.
            let warning = mistake.map(|e| {
                let first = e.lines().next().unwrap_or_default().to_string();
                // The mistake first: a narrow status line cut it off behind the fixed words
                // (found by an independent re-check).
                format!("config error: {first} (see `modelrelay check-config`)")
            });
            match runtime.block_on(crate::console::run(path, plans, warning)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Keys(args) => {
            // A key of a plan withdrawn from sale is the operator's to make (a comp key), and
            // said, as the shop would not sell it (found by an independent check).
            if let (KeysCommand::Create { plan, .. }, Some(c)) = (&args.command, &config)
                && c.plans.get(plan).is_some_and(|p| !p.enabled)
            {
                eprintln!(
                    "modelrelay: note: plan {plan} is withdrawn from sale (enabled = false); the \
                     key works as that plan's keys do"
                );
            }
            let path = args.socket.clone().unwrap_or(socket);
            runtime.block_on(keys(&path, args))
        }
        Command::Orders(args) => {
            let path = args.socket.clone().unwrap_or(socket);
            runtime.block_on(orders(&path, args))
        }
        Command::Requests(args) => {
            let path = args.socket.clone().unwrap_or(socket);
            runtime.block_on(requests::requests(&path, args))
        }
        Command::Mail(args) => {
            let path = args.socket.clone().unwrap_or(socket);
            runtime.block_on(mail(&path, args))
        }
        Command::Upstream(args) => {
            let path = args.socket.clone().unwrap_or(socket);
            runtime.block_on(upstream::upstream(&path, args))
        }
        Command::CheckConfig => ExitCode::SUCCESS,
        Command::Backup {
            file,
            socket: given,
        } => {
            let path = given.unwrap_or(socket);
            runtime.block_on(backup(&path, file))
        }
    }
}

/// `backup FILE`: the daemon writes the copy; FILE is made absolute here first, since the
/// daemon's working directory is not the caller's.
async fn backup(socket_path: &Path, file: PathBuf) -> ExitCode {
    let file = if file.is_absolute() {
        file
    } else {
        match std::env::current_dir() {
            Ok(cwd) => cwd.join(file),
            Err(e) => return fail(format_args!("cannot resolve {}: {e}", file.display())),
        }
    };
    if file.is_dir() {
        return fail(format_args!(
            "{} is a directory: name the backup file inside it, e.g. {}",
            file.display(),
            file.join("modelrelay.db").display()
        ));
    }
    if file.symlink_metadata().is_ok() {
        return fail(format_args!(
            "{} already exists; a backup never overwrites a file",
            file.display()
        ));
    }
    match client::call(socket_path, &Request::Backup { path: file }).await {
        Err(e) => fail(e),
        Ok(Response::Error { message }) => fail(message),
        Ok(Response::BackedUp {
            path,
            bytes,
            behind,
        }) => {
            if behind {
                eprintln!(
                    "modelrelay: the database cannot commit right now (see the daemon's log; a \
                     full disk?): this copy lacks the rows waiting for a commit, which are in \
                     the data directory's journal/ — copy that directory too"
                );
            }
            // The daemon wrote the file in its own view of the filesystem: under the unit's
            // `PrivateTmp=yes` its /tmp is not this shell's, so a copy "made" in /tmp is out of
            // reach here and goes when the service stops (found by an independent check).
            // (A directory this shell may not look into is not that: only "not found" is.)
            if path
                .symlink_metadata()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            {
                return fail(format_args!(
                    "the daemon wrote {} ({bytes} bytes), but this shell cannot see that file: \
                     the service has a private /tmp (systemd's PrivateTmp) or another view of \
                     that directory; back up into one it shares with you (under the systemd unit: \
                     /var/lib/modelrelay/backups/, see README \"Backups and restore\")",
                    path.display()
                ));
            }
            output(&format!("{} ({bytes} bytes)\n", path.display()))
        }
        Ok(other) => fail(format_args!("unexpected answer from the daemon: {other:?}")),
    }
}

async fn keys(path: &Path, args: KeysArgs) -> ExitCode {
    let req = match &args.command {
        KeysCommand::Create {
            plan,
            email,
            budget,
            note,
        } => Request::KeysCreate {
            plan: plan.clone(),
            email: email.clone(),
            budget_usd: *budget,
            note: note.clone(),
        },
        KeysCommand::List => Request::KeysList,
        KeysCommand::Show { key } => Request::KeysShow { key: key.clone() },
        KeysCommand::Revoke { key } => Request::KeysRevoke { key: key.clone() },
        KeysCommand::Topup { key, usd } => Request::KeysTopup {
            key: key.clone(),
            usd: *usd,
        },
        KeysCommand::Rotate { key } => Request::KeysRotate { key: key.clone() },
    };
    let secret = matches!(
        args.command,
        KeysCommand::Create { .. } | KeysCommand::Rotate { .. }
    );
    if secret && out::stdout_goes_nowhere() {
        return fail(
            "stdout leads nowhere (/dev/null, /dev/zero or closed): the new key would be printed nowhere; nothing was done",
        );
    }
    // Revoking a revoked key changes nothing: said so, rather than the card alone as if it had
    // just been revoked (the console says it too).
    let revoked_before = match &args.command {
        KeysCommand::Revoke { key } => matches!(
            client::call(path, &Request::KeysShow { key: key.clone() }).await,
            Ok(Response::Key { key }) if key.status == crate::keys::KeyStatus::Revoked
        ),
        _ => false,
    };
    let resp = match client::call(path, &req).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if revoked_before {
        eprintln!("modelrelay: that key was revoked already; nothing changed");
    }
    match resp {
        Response::Error { message } => fail(message),
        Response::Created { key, api_key } | Response::Rotated { key, api_key } => {
            // A budget too small for the plan's smallest request makes a key that cannot be
            // used until topped up: said, not left for the customer to find (an independent
            // check).
            if key.status == crate::keys::KeyStatus::Exhausted {
                eprintln!(
                    "modelrelay: warning: this key's remaining ${} cannot pay for a request of \
                     its plan: it is `exhausted` until topped up (`modelrelay keys topup`)",
                    key.remaining_usd
                );
            }
            let text = if args.json {
                let doc = serde_json::json!({"api_key": api_key, "key": key});
                match out::json_text(&doc) {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                }
            } else {
                format!("{api_key}\n")
            };
            out::secret_output(&text, &key.id)
        }
        Response::Keys { keys } => {
            if args.json {
                print_json(&keys)
            } else {
                output(&keys_table(&keys))
            }
        }
        Response::Key { key } => {
            if args.json {
                print_json(&key)
            } else {
                output(&key_card(&key))
            }
        }
        other => fail(format_args!("unexpected answer from the daemon: {other:?}")),
    }
}

/// The most `--limit` may ask for (the daemon's own cap).
const LIST_MAX: u32 = 10_000;

/// What a list asks the daemon for: one more than it shows, to tell a cut list from a whole one.
fn ask_for(limit: u32) -> u32 {
    limit.clamp(1, LIST_MAX).saturating_add(1).min(LIST_MAX)
}

/// Cut a list to `limit` and say so on stderr when there was more (the table alone read as
/// "every order").
/// With `--json`, what the table says of mail being off goes to stderr (the JSON stays the
/// outbox alone; found by an independent re-check).
fn mail_off_note(sending: bool, empty: bool) {
    if !sending && empty {
        eprintln!(
            "note: email is off ([email] smtp_url is not set): receipts and notices are queued once it is configured"
        );
    } else if !sending {
        eprintln!(
            "note: email is off ([email] smtp_url is not set): these messages wait until it is configured"
        );
    }
}

fn cut_to<T>(items: &mut Vec<T>, limit: Option<u32>, what: &str) -> bool {
    if let Some(limit) = limit {
        let limit = limit.clamp(1, LIST_MAX) as usize;
        if items.len() > limit || (items.len() == limit && limit == LIST_MAX as usize) {
            items.truncate(limit);
            eprintln!(
                "note: the newest {limit} {what} are shown; there may be more (`--limit N`, up to {LIST_MAX})"
            );
            return true;
        }
    }
    false
}

async fn orders(path: &Path, args: OrdersArgs) -> ExitCode {
    let limit = match &args.command {
        OrdersCommand::List { limit } => Some(*limit),
        OrdersCommand::Show { .. } => None,
    };
    let req = match &args.command {
        OrdersCommand::List { limit } => Request::OrdersList {
            limit: Some(ask_for(*limit)),
        },
        OrdersCommand::Show { order_id } => Request::OrdersShow {
            order_id: order_id.clone(),
        },
    };
    match client::call(path, &req).await {
        Err(e) => fail(e),
        Ok(Response::Error { message }) => fail(message),
        Ok(Response::Orders { mut orders }) => {
            cut_to(&mut orders, limit, "orders");
            if args.json {
                print_json(&orders)
            } else {
                output(&orders_table(&orders))
            }
        }
        Ok(Response::Order { order }) if args.json => print_json(&order),
        Ok(Response::Order { order }) => output(&order_card(&order)),
        Ok(other) => fail(format_args!("unexpected answer from the daemon: {other:?}")),
    }
}

async fn mail(path: &Path, args: MailArgs) -> ExitCode {
    let limit = match &args.command {
        MailCommand::List { limit } => Some(*limit),
        MailCommand::Retry { .. } => None,
    };
    let req = match &args.command {
        MailCommand::List { limit } => Request::MailList {
            limit: Some(ask_for(*limit)),
        },
        MailCommand::Retry { id: Some(id), .. } => Request::MailRetry { id: *id },
        MailCommand::Retry { id: None, .. } => Request::MailRetryFailed,
    };
    match client::call(path, &req).await {
        Err(e) => fail(e),
        Ok(Response::Error { message }) => fail(message),
        Ok(Response::Mail { mut mail, sending }) => {
            cut_to(&mut mail, limit, "messages");
            if args.json {
                mail_off_note(sending, mail.is_empty());
                print_json(&mail)
            } else {
                output(&mail_table(&mail, sending))
            }
        }
        Ok(Response::MailRetried { mail, sending }) if args.json => {
            mail_off_note(sending, false);
            print_json(&mail)
        }
        // With mail off, the table says it waits (found by an independent re-check).
        Ok(Response::MailRetried { mail, sending }) => output(&mail_table(&[mail], sending)),
        Ok(Response::MailRetriedFailed {
            queued,
            withheld,
            sending,
        }) if args.json => {
            mail_off_note(sending, queued.is_empty());
            print_json(&serde_json::json!({ "queued": queued, "withheld": withheld }))
        }
        Ok(Response::MailRetriedFailed {
            queued,
            withheld,
            sending,
        }) => output(&retried_failed_text(&queued, &withheld, sending)),
        Ok(other) => fail(format_args!("unexpected answer from the daemon: {other:?}")),
    }
}
