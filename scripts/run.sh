#!/usr/bin/env bash
# Try pi-bridge from a checkout:
#   scripts/run.sh                         pi on fixtures/sample-project through `pii --local`
#   scripts/run.sh ./some/dir              the same on another local directory
#   scripts/run.sh user@host:/srv/app      pi on a remote project through `pii --ssh`
#   scripts/run.sh DEST -- -p "hello"      arguments after -- go to pi
# Uses `pi` from PATH, else installs the newest pinned pi (fixtures/pi/<version>, npm ci) that
# the node at hand can run.
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
  # The newest pinned pi whose engines.node this node satisfies (pi 1.x needs Node >= 22.19;
  # on Node 20 that is pi 0.73.1).
  pi_version="$(node -e '
    const fs = require("fs"), path = require("path");
    const have = process.versions.node.split(".").map(Number);
    const ge = (a, b) => a[0] !== b[0] ? a[0] > b[0] : a[1] !== b[1] ? a[1] > b[1] : a[2] >= b[2];
    const dir = path.join(process.argv[1], "fixtures/pi");
    const versions = fs.readdirSync(dir).sort((a, b) => (ge(a.split(".").map(Number), b.split(".").map(Number)) ? -1 : 1));
    for (const v of versions) {
      const lock = require(path.join(dir, v, "package-lock.json"));
      const name = Object.keys(lock.packages[""].dependencies)[0];
      const m = /^>=\s*(\d+)\.(\d+)\.(\d+)/.exec((lock.packages["node_modules/" + name].engines || {}).node || ">=0.0.0");
      if (m && ge(have, m.slice(1).map(Number))) { console.log(v); process.exit(0); }
    }
    process.exit(1);
  ' "$root")" || { echo "run.sh: node $(node --version) is too old for every pinned pi" >&2; exit 1; }
  ensure_npm_fixture "$root/fixtures/pi/$pi_version" >&2
  PII_PI="$(cell_pi_cli "$pi_version")"
  export PII_PI
fi

if [[ "$target" == *:* ]]; then
  mode=--ssh
else
  mode=--local
fi
target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$root/$target_dir"
exec "$target_dir/debug/pii" "$mode" "$target" ${agent_args[@]+"${agent_args[@]}"} -- "$@"
