#!/usr/bin/env bash
# The npm install of a release, tested the way a user meets it (README "Install" and
# "Releasing"); .ci/run runs it after scripts/test.sh.
#   bash scripts/dist-test.sh
# 1. builds what the test needs, `scripts/dist.sh --platforms linux-x64` (pi-bridge,
#    @pi-bridge/agents with both agents, @pi-bridge/linux-x64), which --checks them; the other
#    laptop platforms cost ~1.5 min each and are built by the full scripts/dist.sh only;
# 2. shows that --check refuses broken packages, each for its reason;
# 3. publishes the tarballs to a private registry (verdaccio on 127.0.0.1, no uplinks), and with
#    a fresh prefix and cache, on a PATH without cargo, runs `npm install -g pi-bridge`;
# 4. runs tests/tests/npm_install.rs with that install (pii --version, pi over the ssh fixture
#    uploading the npm package's agent, the aarch64 agent under qemu-aarch64-static, the
#    launcher on every Node of the matrix) and the end-to-end pi test with the installed pii on
#    the matrix's first cell.
# Needs root, like scripts/test.sh (sshd fixtures).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
t0=$SECONDS

section "system packages"
# The aarch64 agent runs under user-mode qemu, started by name (no binfmt registration needed).
qemu=()
command -v qemu-aarch64-static >/dev/null || qemu=(qemu-user-static)
ensure_test_machine scripts/dist-test.sh "${qemu[@]}"
lap "system packages"

section "the matrix's pinned pi and node; verdaccio (fixtures/verdaccio)"
ensure_matrix
ensure_npm_fixture "$root/fixtures/verdaccio"
read -r cell_pi cell_node < <(matrix_cells | head -1)
# verdaccio 6 needs Node >= 22: the first cell's node runs it.
cell_node_path="$(cell_node_bin "$cell_node")"
lap "fixtures"

section "the packages: scripts/dist.sh --platforms linux-x64"
bash scripts/dist.sh --platforms linux-x64
lap "dist.sh --platforms linux-x64"

work="$(mktemp -d /tmp/pi-bridge-dist-test.XXXXXX)"
registry_pid=
cleanup() {
  if [[ -n "$registry_pid" ]]; then kill "$registry_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

section "dist.sh --check refuses broken packages"
# refuse NAME REASON COMMAND...: COMMAND breaks a copy of the staged packages (run inside it);
# repacked, they must fail the check, saying REASON.
refuse() {
  local name="$1" want="$2" out
  shift 2
  local stage="$work/broken-$name/stage" tgz="$work/broken-$name/npm"
  mkdir -p "$tgz"
  cp -r dist/stage "$stage"
  (cd "$stage" && "$@")
  for pkg in "$stage"/*/; do
    npm pack "$pkg" --pack-destination "$tgz" --ignore-scripts --silent >/dev/null
  done
  if out="$(node scripts/dist.cjs check "$tgz" linux-x64 2>&1)"; then
    echo "--check accepted a broken release ($name):" >&2
    echo "$out" >&2
    exit 1
  fi
  if ! grep -qF -- "$want" <<<"$out"; then
    echo "--check refused $name without saying '$want':" >&2
    echo "$out" >&2
    exit 1
  fi
  echo "refused, $name: $(grep -F -- "$want" <<<"$out" | head -1 | sed 's/^ *//')"
}
edit_json() { # FILE JS-EXPRESSION-ON-m
  node -e 'const fs = require("fs"); const f = process.argv[1]; const m = JSON.parse(fs.readFileSync(f)); '"$2"'; fs.writeFileSync(f, JSON.stringify(m, null, 2));' "$1"
}
other_release() { # FILE: the agent's announcement says another version (same length)
  node -e '
    const fs = require("fs"); const f = process.argv[1]; const b = fs.readFileSync(f);
    const m = /PI-BRIDGE-AGENT protocol=\d+ version=([^\n]+)\n/.exec(b.toString("latin1"));
    const other = m[1].replace(/\d/g, (d) => (d === "9" ? "8" : "9"));
    const at = m.index + m[0].indexOf(m[1]);
    b.write(other, at, "latin1"); fs.writeFileSync(f, b);' "$1"
}
refuse dynamic-agent "not static: PT_INTERP" cp /bin/ls agents/x86_64-unknown-linux-musl/pi-bridge-agent
refuse wrong-arch "ELF machine 183, not x86_64" cp agents/aarch64-unknown-linux-musl/pi-bridge-agent linux-x64/bin/pii
refuse agent-of-another-release "the release is" other_release agents/x86_64-unknown-linux-musl/pi-bridge-agent
refuse loose-dependency "not exactly" edit_json linux-x64/package.json 'm.dependencies["@pi-bridge/agents"] = "^" + m.version'
refuse install-script "install scripts (postinstall)" edit_json pi-bridge/package.json 'm.scripts = {postinstall: "node fetch.js"}'
refuse not-executable "bin/pii is not executable" chmod 644 linux-x64/bin/pii
lap "--check refusals"

section "private registry on 127.0.0.1; npm install -g pi-bridge"
port="$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')"
registry="http://127.0.0.1:$port/"
cat >"$work/verdaccio.yaml" <<EOF
storage: $work/registry
uplinks: {}
packages:
  '**':
    access: \$all
    publish: \$all
listen: 127.0.0.1:$port
log: { type: stdout, format: pretty, level: warn }
EOF
"$cell_node_path/node" fixtures/verdaccio/node_modules/verdaccio/bin/verdaccio \
  --config "$work/verdaccio.yaml" >"$work/verdaccio.log" 2>&1 &
registry_pid=$!
if ! node -e '
  const deadline = Date.now() + 60000;
  (async function ping() {
    try { if ((await fetch(process.argv[1] + "-/ping")).ok) return; } catch {}
    if (Date.now() > deadline) { console.error("verdaccio did not answer within 60 s"); process.exit(1); }
    setTimeout(ping, 100);
  })();' "$registry"; then
  cat "$work/verdaccio.log" >&2
  exit 1
fi
echo "verdaccio $registry up after $((SECONDS - t_lap)) s"
printf '//127.0.0.1:%s/:_authToken=dummy\n' "$port" >"$work/publish.npmrc"
for tgz in dist/npm/*.tgz; do
  npm publish "$tgz" --registry "$registry" --userconfig "$work/publish.npmrc" \
    --access public --ignore-scripts --loglevel=warn
done

# The user's machine: their node (the first cell's), the system's tools, no cargo, a new npm
# prefix and cache.
user_path="$cell_node_path:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
if found="$(PATH="$user_path" command -v cargo)"; then
  echo "cargo is on the user PATH ($found): the install would not prove anything" >&2
  exit 1
fi
prefix="$work/prefix"
touch "$work/user.npmrc"
PATH="$user_path" npm install -g pi-bridge --registry "$registry" --prefix "$prefix" \
  --cache "$work/npm-cache" --userconfig "$work/user.npmrc" --no-audit --no-fund
PATH="$user_path" "$prefix/bin/pii" --version
lap "registry and npm install"

section "tests with the installed pii"
# Built here (cargo is the developer's), run on the user's PATH.
# shellcheck disable=SC2016 # the node -e program is JavaScript, not shell
mapfile -t exes < <(cargo test -p pi-bridge-tests --features npm-install --test npm_install \
  --test e2e_pi --no-run --message-format=json |
  node -e '
    const want = {};
    require("readline").createInterface({ input: process.stdin }).on("line", (l) => {
      const m = JSON.parse(l);
      if (m.reason === "compiler-artifact" && m.profile.test && m.executable) want[m.target.name] = m.executable;
    }).on("close", () => console.log(`${want.npm_install}\n${want.e2e_pi}`));')
[[ -x "${exes[0]}" && -x "${exes[1]}" ]] || { echo "test binaries not built: ${exes[*]}" >&2; exit 1; }
lap "build the tests"
run_as_user() { # PI NODE TEST-BINARY: on the user's PATH with that cell's node first
  local node_dir
  node_dir="$(cell_node_bin "$2")"
  (cd tests && env PATH="$node_dir:${user_path#"$cell_node_path":}" PI_BRIDGE_PI="$1" \
    PI_BRIDGE_NODE="$2" PI_BRIDGE_NPM_PREFIX="$prefix" PI_BRIDGE_PII="$prefix/bin/pii" \
    timeout --kill-after=30 10m "$3")
}
run_as_user "$cell_pi" "$cell_node" "${exes[0]}"
lap "npm_install"
# The end-to-end pi test with the installed pii on the first cell (what users run today).
# The launcher's two ways (execve into pii on Node >= 22.15, pii as a child on Node 20) are
# covered on every Node of the matrix by npm_install's launcher test; the source-built pii runs
# e2e_pi on every cell in scripts/test.sh.
section "e2e_pi with the installed pii: pi $cell_pi on node $cell_node"
run_as_user "$cell_pi" "$cell_node" "${exes[1]}"
lap "e2e_pi with the installed pii"

section "dist-test passed in $((SECONDS - t0)) s"
