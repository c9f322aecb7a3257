//! The terminal while the console runs: raw mode and the alternate screen, always undone — on
//! return, on error (the guard's `Drop`) and on panic (a hook that restores before the message).

use std::io::{self, Stdout, stdout};
use std::sync::Once;

use crossterm::cursor::{Hide, Show};
use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// The console's terminal; dropping it gives the operator's shell back as it was.
pub struct TerminalGuard {
    /// The ratatui terminal on stdout.
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

/// Put the terminal back: cooked mode, main screen, visible cursor. Safe to call twice.
pub fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(stdout(), DisableBracketedPaste, LeaveAlternateScreen, Show);
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Restore first, or the panic message lands on the alternate screen and vanishes.
            restore();
            previous(info);
        }));
    });
}

/// Enter raw mode, the alternate screen and bracketed paste.
pub fn enter() -> io::Result<TerminalGuard> {
    use std::io::IsTerminal;
    // Both ends a terminal: piped, the screen's escape codes went into the pipe and the
    // terminal stayed blank; with no terminal on stdin, the error read "No such device or
    // address" (found by an independent check).
    if !io::stdin().is_terminal() || !io::stdout().is_terminal() {
        return Err(io::Error::other(
            "the console needs a terminal on its input and output (not a pipe or a file); \
             for a script, use `modelrelay keys list --json` and the other commands",
        ));
    }
    install_panic_hook();
    enable_raw_mode()?;
    // From here on every early return must restore, which the guard's Drop does.
    let guard = |terminal| TerminalGuard { terminal };
    // Bracketed paste: a paste arrives as one event, never as key presses (see `Event::Paste`).
    if let Err(e) = execute!(stdout(), EnterAlternateScreen, Hide, EnableBracketedPaste) {
        restore();
        return Err(e);
    }
    match Terminal::new(CrosstermBackend::new(stdout())) {
        Ok(t) => Ok(guard(t)),
        Err(e) => {
            restore();
            Err(e)
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}
