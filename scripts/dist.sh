#!/usr/bin/env bash
# Build the npm packages of a release into dist/npm/*.tgz, on Linux x86_64 (README "Releasing").
#   bash scripts/dist.sh                          every package: pi-bridge, @pi-bridge/agents and
#                                                 pii for linux-x64, linux-arm64, darwin-arm64,
#                                                 darwin-x64; then --check
#   bash scripts/dist.sh --platforms linux-x64    pii for these platforms only (a comma list; the
#                                                 agents are always both); scripts/dist-test.sh
#   bash scripts/dist.sh --check [--platforms P]  verify dist/npm/*.tgz; builds and publishes nothing
# Installs what it needs: the rustup targets, and zig + cargo-zigbuild (PyPI, pinned) in a venv
# under target/dist-tools. Publishes nothing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"

ZIGLANG_VERSION=0.15.2
CARGO_ZIGBUILD_VERSION=0.24.1

check_only=0
platforms=all
while (($#)); do
  case "$1" in
    --check) check_only=1 ;;
    --platforms) platforms="${2:?--platforms needs a comma list, e.g. linux-x64,darwin-arm64}"; shift ;;
    --platforms=*) platforms="${1#*=}" ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "dist.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
out="$root/dist/npm"

# zig and cargo-zigbuild from PyPI at the pinned versions, in a venv of their own (the machine's
# Python stays untouched), first on PATH for this run. cargo-zigbuild runs zig as
# `python3 -m ziglang` from the same venv.
ensure_zigbuild() {
  local venv="$root/target/dist-tools/venv"
  if [[ -x "$venv/bin/cargo-zigbuild" ]] &&
    [[ "$("$venv/bin/cargo-zigbuild" --version)" == "cargo-zigbuild $CARGO_ZIGBUILD_VERSION" ]] &&
    [[ "$("$venv/bin/python3" -m ziglang version)" == "$ZIGLANG_VERSION" ]]; then
    export PATH="$venv/bin:$PATH"
    return
  fi
  if ! python3 -m venv --help >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
      apt_install python3 python3-venv
    else
      echo "dist.sh: needs python3 with the venv module (Debian: apt-get install python3-venv) for zig and cargo-zigbuild" >&2
      exit 1
    fi
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
  export PATH="$venv/bin:$PATH"
}

for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "dist.sh: $tool is required but not on PATH" >&2; exit 1; }
done
if ((check_only)); then
  exec node scripts/dist.cjs check "$out" "$platforms"
fi
t0=$SECONDS

section "tools: rustup targets, zig, cargo-zigbuild"
for tool in cargo rustup; do
  command -v "$tool" >/dev/null || { echo "dist.sh: $tool is required but not on PATH" >&2; exit 1; }
done
mapfile -t builds < <(node scripts/dist.cjs builds "$platforms")
((${#builds[@]})) || exit 1
installed_targets="$(rustup target list --installed)"
for line in "${builds[@]}"; do
  target="${line%% *}"
  grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done
ensure_zigbuild
echo "$(cargo-zigbuild --version), zig $(python3 -m ziglang version)"

# One cargo invocation per target, each building that target's crates (pii and/or the agent):
# they share the host's proc-macros and build scripts in target/release. Release profile of the
# workspace (strip, thin LTO); --locked: exactly Cargo.lock's dependencies.
for line in "${builds[@]}"; do
  read -r target crates <<<"$line"
  section "cargo zigbuild --release --target $target ($crates)"
  t_build=$SECONDS
  pkgs=()
  for c in $crates; do pkgs+=(-p "$c"); done
  # macOS targets: rustc warns that xcrun is missing; zig brings the libSystem stubs it links.
  cargo zigbuild --release --locked --target "$target" "${pkgs[@]}"
  echo "-- $target took $((SECONDS - t_build)) s"
done

section "npm pack into dist/npm"
stage="$root/dist/stage"
node scripts/dist.cjs stage "$stage" "$platforms"
rm -rf "$out"
mkdir -p "$out"
for dir in "$stage"/*/; do
  npm pack "$dir" --pack-destination "$out" --ignore-scripts --silent >/dev/null
done
ls -l "$out"

section "check"
node scripts/dist.cjs check "$out" "$platforms"
echo "dist.sh took $((SECONDS - t0)) s"
