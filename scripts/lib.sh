# Shared by scripts/test.sh and scripts/run.sh (sourced, not run).

section() { printf '\n==== %s ====\n' "$*"; }

# npm ci the pinned pi into fixtures/pi/node_modules unless the install already matches
# package-lock.json (a stamp of the lock's sha256 sits inside node_modules).
ensure_pi_fixture() {
  local dir="$1/fixtures/pi"
  local cli="$dir/node_modules/@mariozechner/pi-coding-agent/dist/cli.js"
  local stamp="$dir/node_modules/.pi-bridge-lock.sha256"
  local want
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [[ -f "$cli" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "pi fixture up to date ($(node -p "require('$dir/node_modules/@mariozechner/pi-coding-agent/package.json').version"))"
    return 0
  fi
  npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  [[ -f "$cli" ]] || { echo "npm ci did not produce $cli" >&2; return 1; }
  echo "$want" >"$stamp"
}
