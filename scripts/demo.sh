#!/usr/bin/env bash
# The demo: installs PostgreSQL if it is missing (scripts/ensure-deps.sh), builds calsync,
# starts (or reuses) PostgreSQL, and runs `calsync demo` (seeded university, fake Google
# Calendar, nightly sync, dashboard). Ctrl-C ends it and removes the throwaway database.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo build --release --locked -p calsync-worker
exec scripts/with-postgres.sh target/release/calsync demo "$@"
