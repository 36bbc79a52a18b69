#!/usr/bin/env bash
# The benchmark (README "Benchmarks"): local node vs pii over a loopback sshd vs sshfs vs the ssh
# floor, at +0/+5/+20 ms round trip. Prints tables and writes BENCHMARKS.md. Not part of the tests.
#   bash scripts/bench.sh            # full run (~10 min)
#   bash scripts/bench.sh --quick    # fewer iterations, a 2 000-file git repo (~3 min)
#   bash scripts/bench.sh --only scale [--scale-dirs 1000,10000,100000]   # project size (bench/src/scale.rs)
#   bash scripts/bench.sh --only hops [--quick] [--rtt 0,20]   # an uncached statSync per hop (bench/src/hops.rs)
# Other arguments go to the bench binary (--rtt 0,5,20, --out FILE). Needs root (sshd fixture).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
if [[ "$(id -u)" != 0 ]]; then
  echo "scripts/bench.sh must run as root (sshd fixture, useradd, mount namespaces, FUSE)" >&2
  exit 1
fi
need=()
command -v sshfs >/dev/null || need+=(sshfs)
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
command -v git >/dev/null || need+=(git)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p /run/sshd
ensure_matrix
# The matrix's first cell: its node first on PATH, its pi (tests/src/paths.rs).
read -r PI_BRIDGE_PI PI_BRIDGE_NODE < <(matrix_cells | head -n 1)
export PI_BRIDGE_PI PI_BRIDGE_NODE
PATH="$(cell_node_bin "$PI_BRIDGE_NODE"):$PATH"
section "cargo build --release (pii, agent, bench)"
cargo build --release -p pi-bridge -p pi-bridge-agent -p pi-bridge-bench
section "benchmark"
exec "$root/target/release/pi-bridge-bench" "$@"
