#!/usr/bin/env bash
# Make sure the machine has what calsync's commands need, installing it when missing:
#
#   scripts/ensure-deps.sh             PostgreSQL server binaries (initdb, pg_ctl), for the
#                                      throwaway database of scripts/with-postgres.sh
#   scripts/ensure-deps.sh --browser   the same, plus Chromium and chromedriver (browser tests)
#
# Installs with apt-get (Debian/Ubuntu) when running as root or with passwordless sudo;
# otherwise stops at once and prints the one command to run. PostgreSQL is not needed
# when DATABASE_URL is set (then it is used instead of a throwaway cluster).
# Called by scripts/demo.sh, scripts/test.sh and .ci/run.
set -euo pipefail

log() { printf '[deps] %s\n' "$*" >&2; }

browser=false
for arg in "$@"; do
  case $arg in
    --browser) browser=true ;;
    *) echo "usage: $0 [--browser]" >&2; exit 2 ;;
  esac
done

have() { command -v "$1" >/dev/null 2>&1; }
have_pg_server() {
  { have initdb && have pg_ctl; } || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

missing=()   # Debian package names
if [[ -z ${DATABASE_URL:-} ]] && ! have_pg_server; then missing+=(postgresql); fi
if $browser; then
  have chromium || [[ -x /usr/bin/chromium ]] || missing+=(chromium)
  have chromedriver || [[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
fi
[[ ${#missing[@]} -eq 0 ]] && exit 0

if ! have apt-get; then
  log "missing: ${missing[*]} (Debian package names). Install with your package manager"
  log "  PostgreSQL's server binaries (initdb, pg_ctl) and, for the tests, Chromium and chromedriver:"
  log "  e.g. Fedora: sudo dnf install -y postgresql-server chromium chromedriver"
  log "       macOS:  brew install postgresql@16 chromium chromedriver"
  exit 1
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if have sudo && sudo -n true 2>/dev/null; then
    sudo=(sudo)
  else
    log "missing: ${missing[*]}. Run this once, then try again:"
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
log "installing: ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
log "installed: ${missing[*]}"
