#!/usr/bin/env bash
# The test command (README, CI): install what is missing, build, run every test.
#   bash scripts/test.sh
# Needs root: the integration tests create a user and run sshd in private mount namespaces.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
t0=$SECONDS
lap() { echo "-- $1 took $((SECONDS - t_lap)) s"; t_lap=$SECONDS; }
t_lap=$SECONDS

section "system packages"
if [[ "$(id -u)" != 0 ]]; then
  echo "scripts/test.sh must run as root (sshd fixtures, useradd, mount namespaces)" >&2
  exit 1
fi
need=()
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v git >/dev/null || need+=(git)
for tool in unshare nsenter runuser; do
  command -v "$tool" >/dev/null || { need+=(util-linux); break; }
done
command -v ps >/dev/null || need+=(procps)
command -v tmux >/dev/null || need+=(tmux) # tests/tests/interactive.rs drives pi's TUI in tmux
command -v rg >/dev/null || need+=(ripgrep) # tests/tests/pi_tools.rs: pi's grep runs the remote rg
command -v fdfind >/dev/null || need+=(fd-find) # pi_tools.rs: pi's find runs the remote fd (a wrapper around fdfind)
command -v ip >/dev/null || need+=(iproute2)
command -v useradd >/dev/null || need+=(passwd)
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "all present (openssh-server, git, util-linux, procps, iproute2, tmux, ripgrep, fd-find)"
fi
mkdir -p /run/sshd
for tool in node npm cargo; do
  command -v "$tool" >/dev/null || { echo "$tool is required but not on PATH" >&2; exit 1; }
done
echo "node $(node --version), $(cargo --version), $(ssh -V 2>&1)"
lap "system packages"

section "pinned pi (fixtures/pi)"
ensure_pi_fixture "$root"
lap "pi install"

section "cargo build --workspace"
cargo build --workspace
lap "build"

section "macOS: cargo check -p pi-bridge --target aarch64-apple-darwin"
# Most pi users run pii on a Mac: the local crate and its dependencies must compile there. No
# skipping: a machine that cannot add the target fails here, loudly.
if ! rustup target list --installed | grep -qx aarch64-apple-darwin; then
  rustup target add aarch64-apple-darwin || {
    echo "cannot add the aarch64-apple-darwin target (rustup target add failed); the macOS check needs it" >&2
    exit 1
  }
fi
cargo check -p pi-bridge --target aarch64-apple-darwin
lap "macOS check"

section "cargo test --workspace"
timeout --kill-after=30 20m cargo test --workspace --no-fail-fast
lap "cargo test"

section "node --test (preload/test/**/*.test.{cjs,mjs,js})"
# Name the test files: Node 20's `node --test DIR` would run every script under DIR, helpers too.
mapfile -t preload_tests < <(find preload/test \( -name '*.test.cjs' -o -name '*.test.mjs' \
  -o -name '*.test.js' \) -type f 2>/dev/null | sort)
if ((${#preload_tests[@]})); then
  timeout --kill-after=10 10m node --test "${preload_tests[@]}"
else
  echo "(no preload tests yet)"
fi
lap "preload tests"

section "all tests passed in $((SECONDS - t0)) s"
