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
# A static (musl) agent runs on any Linux of this architecture, whatever its glibc: build and use
# it when the musl target is installed (`rustup target add <arch>-unknown-linux-musl`); the
# default glibc build is used otherwise.
agent_args=()
musl="$(uname -m)-unknown-linux-musl"
if [[ -z "${PII_NO_MUSL:-}" ]] && rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
  if (cd "$root" && cargo build --quiet --release -p pi-bridge-agent --target "$musl"); then
    musl_dir="${CARGO_TARGET_DIR:-$root/target}"
    [[ "$musl_dir" == /* ]] || musl_dir="$root/$musl_dir"
    agent_args=(--agent "$musl_dir/$musl/release/pi-bridge-agent")
  else
    echo "run.sh: the static $musl agent did not build; using the default (glibc) one" >&2
  fi
fi
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
exec "$target_dir/debug/pii" "$mode" "$target" ${agent_args[@]+"${agent_args[@]}"} -- "$@"
