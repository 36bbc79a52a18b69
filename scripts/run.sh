#!/usr/bin/env bash
# Try pi-bridge from a checkout:
#   scripts/run.sh                         pi on fixtures/sample-project through `pii --local`
#   scripts/run.sh ./some/dir              the same on another local directory
#   scripts/run.sh user@host:/srv/app      pi on a remote project through `pii --ssh`
#   scripts/run.sh DEST -- -p "hello"      arguments after -- go to pi
# Uses `pi` from PATH, else installs the pinned pi into fixtures/pi (npm ci).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"

target="$root/fixtures/sample-project"
if (($#)) && [[ "$1" != "--" ]]; then
  target="$1"
  shift
fi
if (($#)) && [[ "$1" == "--" ]]; then
  shift
fi

(cd "$root" && cargo build --workspace --quiet)
if [[ -z "${PII_PI:-}" ]] && ! command -v pi >/dev/null; then
  ensure_pi_fixture "$root" >&2
  export PII_PI="$root/fixtures/pi/node_modules/@mariozechner/pi-coding-agent/dist/cli.js"
fi

if [[ "$target" == *:* ]]; then
  mode=--ssh
else
  mode=--local
fi
target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$root/$target_dir"
exec "$target_dir/debug/pii" "$mode" "$target" -- "$@"
