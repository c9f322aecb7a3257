#!/usr/bin/env bash
# The one test command: every unit and integration test, on a clean clone.
# The integration tests start real servers on 127.0.0.1:0; the openai-SDK test creates its own
# Python venv under target/ (needs python3 and access to PyPI the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "scripts/test.sh: python3 is required (the openai SDK test)" >&2; exit 1; }
exec cargo test --locked --all-targets "$@"
