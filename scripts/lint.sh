#!/usr/bin/env bash
# The shape checks (CI runs them before the tests; CONVENTIONS.md): formatting, clippy with
# warnings as errors, shellcheck of the scripts and of the agent bootstrap, no declared but unused
# dependency (cargo-machete), and no production file over 700 lines or module cycle
# (scripts/shape.py). Installs shellcheck (apt), python3 (apt) and cargo-machete (crates.io) if
# they are missing.
#   bash scripts/lint.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"

# The cargo-machete release checked against (installing it, `cargo install --locked`, took 96 s on
# a shared 2-core machine; once installed the check takes under a second).
MACHETE_VERSION=0.9.2

need=()
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
  if [[ "$(id -u)" != 0 ]]; then
    echo "scripts/lint.sh needs ${need[*]} (apt-get install ${need[*]}; run as root to install them)" >&2
    exit 1
  fi
  apt_install "${need[@]}"
fi
if ! cargo machete --version 2>/dev/null | grep -qx "$MACHETE_VERSION"; then
  section "cargo install cargo-machete $MACHETE_VERSION"
  cargo install --locked --quiet cargo-machete --version "$MACHETE_VERSION"
fi

section "cargo fmt --all --check"
cargo fmt --all --check
lap "fmt"

section "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
lap "clippy"

section "shellcheck scripts/*.sh local/src/bootstrap.sh"
shellcheck scripts/*.sh local/src/bootstrap.sh
lap "shellcheck"

section "cargo machete (unused dependencies)"
cargo machete
lap "machete"

section "scripts/shape.py (file length, module cycles)"
python3 scripts/shape.py
lap "shape"
