//! `modelrelay console`: the operator's live view of the daemon, attached over the admin socket.
//!
//! - [`app`]: the state (no I/O): [`App::handle`] takes an [`Event`], returns [`Action`]s.
//! - [`model`]: the daemon's state as the console knows it (snapshot + events, folded by the
//!   daemon's own [`fold`](crate::activity::fold) under the console's rules).
//! - [`event`]: the one event enum every source feeds, and the commands sent to the daemon.
//! - [`ui`]: rendering only.
//! - `net`, `terminal`: the two socket connections, and the terminal that is always restored.
//! - `upstream`: when the upstream pool is read, and what its answers change.
//!
//! This module is the I/O loop: keys (crossterm's `EventStream`), a clock tick, the subscription
//! and the command connection all become [`Event`]s; after each batch the screen is redrawn
//! (at most every [`FRAME`] while events stream in; at once after a key).
//!
//! The top floor, and a pure client: it knows the daemon only through the wire protocol, the
//! socket's client half and the shared fold (plus money and the status enums).

pub mod app;
pub mod event;
mod input;
pub mod model;
mod net;
mod terminal;
pub mod ui;
mod upstream;

#[cfg(test)]
pub(crate) mod tests;

use std::path::PathBuf;
use std::time::Duration;

use crate::clock::now_ms;
use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

pub use app::App;
pub use event::{Action, Command, Event};
pub use input::parse_amount;

/// How often the clock ticks (elapsed times, tokens/s, expiry).
const TICK: Duration = Duration::from_millis(250);
/// Events applied before the screen is redrawn, at most (a burst is drawn once).
const BATCH: usize = 512;
/// Least time between two frames while events stream in. A busy daemon sends hundreds of
/// events a second, and drawing after each one cost the console a large share of a core on
/// the operator's (often one-core) VPS; 20 frames a second is smooth to the eye. A key press or
/// a resize is still drawn at once.
const FRAME: Duration = Duration::from_millis(50);
/// Soonest a frame follows the last one after a key press: typing shows at once, while keys
/// that come faster than that (held down, or a terminal without bracketed paste) are handled
/// between frames instead of each drawing one (a 6 000-character paste took ~50 s of frames
/// on a Keys view of 2 300 keys; found by an independent check).
const KEY_FRAME: Duration = Duration::from_millis(16);

/// True when `NO_COLOR` is set to anything non-empty (<https://no-color.org>).
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Run the console against the daemon at `socket`; `plans` are offered for comp keys;
/// `warning`, if any, is shown on the status line for its first half minute.
///
/// Fails before touching the terminal when no daemon answers or the socket refuses this user;
/// afterwards a lost daemon is waited for and reconnected to.
pub async fn run(
    socket: PathBuf,
    plans: Vec<String>,
    warning: Option<String>,
) -> Result<(), String> {
    let first = net::subscribe(&socket).await.map_err(|e| e.to_string())?;
    let mut app = App::new(socket.display().to_string(), plans, no_color());
    if let Some(w) = warning {
        app.warn_at_start(w, now_ms());
    }
    let mut guard = terminal::enter().map_err(|e| format!("cannot take over the terminal: {e}"))?;

    let (tx, mut rx) = mpsc::channel::<Event>(4096);
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel::<Command>();
    let sub = tokio::spawn(net::subscription(socket.clone(), first, tx.clone()));
    let cmds = tokio::spawn(net::commands(socket, cmd_rx, tx));
    let result = event_loop(&mut guard, &mut app, &mut rx, &cmd_tx).await;
    sub.abort();
    cmds.abort();
    drop(guard);
    result
}

async fn event_loop(
    guard: &mut terminal::TerminalGuard,
    app: &mut App,
    rx: &mut mpsc::Receiver<Event>,
    cmd_tx: &mpsc::UnboundedSender<Command>,
) -> Result<(), String> {
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // SIGINT and SIGQUIT too: in raw mode Ctrl-C is a key, but `kill -INT` or `timeout -s
    // INT` from outside killed the console and left the terminal raw, on the alternate screen
    // (found by an independent check).
    let (mut term, mut hup, mut int, mut quit) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
    ) {
        (Ok(t), Ok(h), Ok(i), Ok(q)) => (t, h, i, q),
        (Err(e), ..) | (_, Err(e), ..) | (.., Err(e), _) | (.., Err(e)) => {
            return Err(format!("cannot watch signals: {e}"));
        }
    };
    app.handle(Event::Tick(now_ms()));
    // Something changed since the last frame; `now`: draw it without waiting for `FRAME`.
    let (mut dirty, mut now) = (true, true);
    let mut last_frame = tokio::time::Instant::now();
    loop {
        let due = last_frame + if now { KEY_FRAME } else { FRAME };
        if dirty && tokio::time::Instant::now() >= due {
            guard
                .terminal
                .draw(|f| ui::draw(f, app))
                .map_err(|e| format!("cannot draw: {e}"))?;
            last_frame = tokio::time::Instant::now();
            (dirty, now) = (false, false);
        }
        let event = tokio::select! {
            k = keys.next() => match k {
                Some(Ok(TermEvent::Key(k))) => {
                    now = true;
                    Event::Key(k)
                }
                Some(Ok(TermEvent::Paste(text))) => {
                    now = true;
                    Event::Paste(text)
                }
                // A resize (or anything else) only needs the redraw at the top of the loop.
                Some(Ok(_)) => {
                    (dirty, now) = (true, true);
                    continue;
                }
                Some(Err(e)) => return Err(format!("cannot read the keyboard: {e}")),
                None => return Ok(()),
            },
            // The frame that events since the last one are waiting for.
            () = tokio::time::sleep_until(due), if dirty => continue,
            _ = tick.tick() => Event::Tick(now_ms()),
            e = rx.recv() => match e {
                Some(e) => e,
                None => return Ok(()),
            },
            _ = term.recv() => return Ok(()),
            _ = hup.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = quit.recv() => return Ok(()),
        };
        dirty = true;
        let mut actions = app.handle(event);
        for _ in 0..BATCH {
            match rx.try_recv() {
                Ok(e) => actions.extend(app.handle(e)),
                Err(_) => break,
            }
        }
        for action in actions {
            match action {
                Action::Quit => return Ok(()),
                Action::Send(cmd) => {
                    if cmd_tx.send(cmd).is_err() {
                        return Err("the command connection stopped".into());
                    }
                }
            }
        }
    }
}
