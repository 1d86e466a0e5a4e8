#!/usr/bin/env bash
# Run every test of the workspace against a real PostgreSQL (see scripts/with-postgres.sh).
# Installs PostgreSQL, Chromium and chromedriver first if they are missing
# (scripts/ensure-deps.sh). Extra arguments go to the test runner, e.g.
# `scripts/test.sh -p calsync-domain`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --browser
# Build first so the throwaway cluster does not sit idle during compilation.
cargo build --workspace --all-targets --locked
if cargo nextest --version >/dev/null 2>&1; then
  exec scripts/with-postgres.sh cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  exec scripts/with-postgres.sh cargo test --workspace --locked --no-fail-fast "$@"
fi
