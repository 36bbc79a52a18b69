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

section "system packages"
ensure_test_machine scripts/test.sh
lap "system packages"

section "the matrix's pinned pi and node (fixtures/pi, fixtures/node)"
ensure_matrix
lap "matrix install"

section "cargo-nextest"
# On this machine kind's images; installed from crates.io where it is missing.
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
lap "cargo-nextest"

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

# Every suite on the matrix's first cell (fixtures/matrix.json: what users run today); the
# suites that run pi or compare with plain node on every other cell. Each cell puts its node
# first on PATH (pii, the tests and `node --test` all find it there) and names its pi.
CELL_SUITES=(--test e2e_pi --test interactive --test pi_tools --test round_trips --test trust --test boundary --test doctor --test pi_versions --test conformance --test conformance_watch)
mapfile -t cells < <(matrix_cells)

# Name the test files: Node 20's `node --test DIR` would run every script under DIR, helpers too.
mapfile -t preload_tests < <(find preload/test \( -name '*.test.cjs' -o -name '*.test.mjs' \
  -o -name '*.test.js' \) -type f 2>/dev/null | sort)

run_cell() { # pi node scope(all|cell)
  local pi="$1" node="$2" scope="$3"
  # shellcheck disable=SC2155 # cell_node_bin cannot fail once ensure_matrix ran
  local -x PATH="$(cell_node_bin "$node"):$PATH" PI_BRIDGE_PI="$pi" PI_BRIDGE_NODE="$node"
  section "pi $pi on node $(node --version): ${scope} suites"
  # The preload's tests (~35 s, mostly waiting on child processes, 4 files at a time) run beside
  # the cargo suites; their output is printed after them, and either failing fails the cell.
  local preload_log preload_pid preload_rc=0 rc=0
  preload_log="$(mktemp)"
  timeout --kill-after=10 10m node --test --test-concurrency=4 "${preload_tests[@]}" >"$preload_log" 2>&1 &
  preload_pid=$!
  # cargo-nextest runs the tests of all binaries side by side (.config/nextest.toml: 4 at a
  # time, load.rs in two of the slots); doctests are cargo test's.
  if [[ "$scope" == all ]]; then
    timeout --kill-after=30 20m cargo nextest run --workspace --no-fail-fast || rc=$?
    ((rc)) || timeout --kill-after=30 5m cargo test --workspace --doc || rc=$?
  else
    timeout --kill-after=30 10m cargo nextest run -p pi-bridge-tests --no-fail-fast "${CELL_SUITES[@]}" || rc=$?
  fi
  wait "$preload_pid" || preload_rc=$?
  echo "-- the preload's tests (node --test):"
  cat "$preload_log"
  rm -f "$preload_log"
  if ((rc || preload_rc)); then
    echo "pi $pi on node $node: cargo suites exit $rc, preload tests exit $preload_rc" >&2
    exit 1
  fi
  lap "pi $pi on node $node"
}

first=1
for c in "${cells[@]}"; do
  read -r pi node <<<"$c"
  if ((first)); then run_cell "$pi" "$node" all; else run_cell "$pi" "$node" cell; fi
  first=0
done

section "all tests passed in $((SECONDS - t0)) s"
