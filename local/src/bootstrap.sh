# shellcheck shell=sh
# The remote bootstrap of pii (POSIX sh), run by `ssh host sh -c '<this>'`; local/src/install.rs
# documents what it does and embeds it with include_str!.
#
# It travels as ONE line (any login shell, csh included, passes a one-line argument on intact):
# pii drops the comment lines, joins `\`-continued lines, and joins the lines with "; ". So every
# line below (with its continuations) is one complete command. Before it pii sets:
#   PI_BRIDGE_NONCE  (exported) the connection's nonce, echoed by the agent
#   v                the agent release pii expects (protocol::VERSION)
#   age              minutes a version directory is safe from pruning (PRUNE_MIN_AGE_MIN)
#   known()          sets d (version directory) and sz (size) for a `uname -sm`, if pii has one
#
# No umask here: the agent (and every process pi runs) must keep the login's umask, or files pi
# creates on the remote would come out 0600. Only the install step is private.
: "${v:?}" "${age:?}"
c="$HOME/.cache/pi-bridge"; base="$c/agent"; me=$(id -u)
unlock() { :; }
fail() { echo "PI-BRIDGE-ERROR $*"; unlock; exit 1; }
# Never a path another user could redirect or write.
mine() { for p in "$c" "$base"; do \
  if test -L "$p"; then fail "$p is a symlink; pi-bridge keeps its agent only in a private directory of yours (remove the link: rm '$p')"; fi; \
  if test -e "$p" && ! test -O "$p"; then fail "$p is not owned by you (uid $me); pi-bridge refuses to run or install its agent there"; fi; \
  done; }
mine
u="$(uname -sm)"
d=; sz=; known "$u"
# `ls -ldn`: mode owner size in one call (a trailing `.` is an SELinux label; `+`, an ACL, fails
# the check). The word splitting of the listing is the point; globbing is off meanwhile.
# shellcheck disable=SC2046
st() { set -f; set -- $(ls -ldn "$1" 2>/dev/null); set +f; m="${1%.}"; o="$3"; s="$5"; }
pdir() { st "$1"; test "$m" = drwx------ && test "$o" = "$me"; }
ok() { pdir "$c" && pdir "$base" && pdir "${1%/*}" && st "$1" && test "$m" = -rwx------ \
  && test "$o" = "$me" && { test -z "$2" || test "$s" = "$2"; }; }
# Start (every run, cheap): the cached agent, if it passes the check.
if test -n "$d" && ok "$base/$d/pi-bridge-agent" "$sz"; then exec "$base/$d/pi-bridge-agent" --stdio; fi
if test -z "$d"; then for a in "$base"/"$v"-*/pi-bridge-agent; do \
  if ok "$a" ''; then exec "$a" --stdio; fi; done; fi
if test -n "$d" && test -e "$base/$d"; then \
  echo "pi-bridge: $base/$d failed the start check (0700 dirs and binary owned by uid $me, $sz bytes): reinstalling" >&2; fi
# Install: ask, receive, verify, move into place.
echo "PI-BRIDGE-INSTALL $u"
read -r size sum dir || fail no upload header received
case "$dir" in ''|*/*|.*) fail bad directory name "$dir";; esac
test "$size" -ge 0 2>/dev/null || fail bad size "$size"
d="$base/$dir"
um=$(umask); umask 077
mkdir -p "$base" || fail cannot create "$base"
mine
chmod 700 "$c" "$base" || fail cannot chmod "$base"
lk="$base/.lock"
# The lock: flock, or an mkdir lock whose holder's pid is gone or which is older than 10 min.
if command -v flock >/dev/null 2>&1; then \
  exec 9>"$lk" || fail cannot open "$lk"; \
  flock -w 600 9 || fail "another install held $lk for 10 minutes"; \
  unlock() { exec 9>&-; }; \
else n=0; until mkdir "$lk.d" 2>/dev/null; do \
  op=$(cat "$lk.d/pid" 2>/dev/null); \
  if { test -n "$op" && ! kill -0 "$op" 2>/dev/null; } || test -n "$(find "$lk.d" -prune -mmin +10 2>/dev/null)"; then rm -rf "$lk.d"; continue; fi; \
  n=$((n+1)); test $n -lt 600 || fail "another install held $lk.d for 10 minutes"; sleep 1; \
  done; echo $$ > "$lk.d/pid"; unlock() { rm -rf "$lk.d"; }; fi
mkdir -p "$d" || fail cannot create "$d"
if test -L "$d" || ! test -O "$d"; then fail "$d is a symlink or not owned by you; refused"; fi
chmod 700 "$d" || fail cannot chmod "$d"
t="$d/.upload.$$"
head -c "$size" > "$t" || { rm -f "$t"; fail cannot write "$t"; }
if command -v sha256sum >/dev/null 2>&1; then got=$(sha256sum "$t"); \
elif command -v shasum >/dev/null 2>&1; then got=$(shasum -a 256 "$t"); \
else rm -f "$t"; rmdir "$d" 2>/dev/null; fail neither sha256sum nor shasum is installed; fi
got="${got%% *}"
if test "$got" = "$sum"; then :; else rm -f "$t"; rmdir "$d" 2>/dev/null; \
  fail "sha256 mismatch: expected $sum, got $got (upload of $size bytes corrupted)"; fi
if chmod 700 "$t" && mv -f "$t" "$d/pi-bridge-agent"; then :; else rm -f "$t"; fail cannot install "$d/pi-bridge-agent"; fi
# Prune other version directories: not the young ones, not one a running process executes.
# shellcheck disable=SC2010
inuse() { ls -l /proc/[0-9]*/exe 2>/dev/null | grep -qF -- "-> $1/"; }
for o in "$base"/*; do if test "$o" = "$d" || ! test -d "$o"; then continue; fi; \
  if test -n "$(find "$o" -prune -mmin "-$age" 2>/dev/null)" || inuse "$o"; then continue; fi; \
  rm -rf "$o"; done
unlock
umask "$um"
exec "$d/pi-bridge-agent" --stdio
