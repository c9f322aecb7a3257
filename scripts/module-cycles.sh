#!/usr/bin/env bash
# Module-level import cycles of the library: none may exist (ARCHITECTURE.md). Needs
# cargo-modules (`cargo install cargo-modules --version 0.27.0 --locked` on Rust 1.95).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo modules --version >/dev/null 2>&1; then
  echo "scripts/module-cycles.sh: cargo-modules is not installed;" \
    "cargo install cargo-modules --version 0.27.0 --locked" >&2
  exit 2
fi
cargo modules dependencies -p modelrelay --lib --no-externs --no-sysroot \
  --no-fns --no-traits --no-types --no-owns | python3 scripts/module-cycles.py
