#!/usr/bin/env bash
# The one test command: every unit and integration test, on a clean clone.
# The integration tests start real servers on 127.0.0.1:0; the openai- and anthropic-SDK tests
# create their own Python venv under target/ (needs python3 and access to PyPI the first time);
# the Claude Code test (tests/claude_code.rs) installs the pinned @anthropic-ai/claude-code under
# target/claude-code with npm (needs npm and the npm registry the first time); the browser test
# (tests/browser.rs) drives Debian's headless Chromium through ChromeDriver, and the console test
# (tests/console.rs) runs `modelrelay console` inside a detached tmux session. Chromium,
# ChromeDriver and tmux are installed here with apt-get when missing (as root, the way CI runs),
# and so are shellcheck and systemd (systemd-analyze), which tests/install.rs runs on install.sh
# and systemd/modelrelay.service, and npm (with Node.js) for the Claude Code test.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "scripts/test.sh: python3 is required (the Python SDK tests)" >&2; exit 1; }
missing=()
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  missing+=(chromium chromium-driver)
fi
command -v tmux >/dev/null || missing+=(tmux)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v npm >/dev/null || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: missing ${missing[*]} (the browser test needs /usr/bin/chromium and" \
      "/usr/bin/chromedriver, the console test needs tmux, the install test shellcheck and" \
      "systemd-analyze, the Claude Code test npm); run this script as root to install" \
      "them, or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "scripts/test.sh: installing ${missing[*]} (browser, console, install and Claude Code tests)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y "${missing[@]}"
fi
# --workspace: the benchmark harness's own unit tests (percentiles, the soak report) too.
exec cargo test --locked --workspace --all-targets "$@"
