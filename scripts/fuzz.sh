#!/usr/bin/env bash
# Fuzz the frame decoder + request parsing and the sandbox path checker (issue 5):
#   bash scripts/fuzz.sh [seconds per target, default 60]
# Installs what it needs: the nightly toolchain (rustup, minimal profile) and cargo-fuzz. Seeds
# come from fuzz/corpus/<target>/ (checked in, also run on stable by remote/tests/fuzz_seeds.rs);
# new inputs go to a scratch corpus, so the checked-in seeds stay as they are. A crash leaves its
# input in fuzz/artifacts/<target>/ and makes this script fail.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"
secs="${1:-60}"
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "usage: bash scripts/fuzz.sh [seconds]" >&2; exit 2; }

command -v rustup >/dev/null || { echo "rustup is required (https://rustup.rs)" >&2; exit 1; }
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "installing the nightly toolchain (cargo-fuzz needs -Zsanitizer)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
echo "$(rustup run nightly rustc --version), $(cargo fuzz --version)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The sandbox target builds its fixture tree under TMPDIR: keep it in the scratch dir.
export TMPDIR="$work"
status=0
for target in frame sandbox; do
  echo "== $target: ${secs} s"
  mkdir -p "$work/corpus-$target"
  if cargo +nightly fuzz run "$target" "$work/corpus-$target" "corpus/$target" -- \
    -max_total_time="$secs" -print_final_stats=1 2>"$work/$target.log"; then
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ *DONE)' "$work/$target.log" || true
    echo "$target: no crash in ${secs} s ($(find "$work/corpus-$target" -type f | wc -l) new corpus inputs)"
  else
    tail -n 60 "$work/$target.log"
    echo "$target: CRASH (input saved under fuzz/artifacts/$target/)" >&2
    status=1
  fi
done
exit "$status"
