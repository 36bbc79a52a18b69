#!/usr/bin/env python3
"""Plots `pi-bridge-bench --only scale`'s rows (bench/scale.tsv) as docs/scale.png: pii start to
pi's first tool result (and to every directory watched, where the rows have it), and the agent's
peak RSS, against the project's directory count.
Usage: python3 scripts/plot-scale.py [bench/scale.tsv] [docs/scale.png]  (needs matplotlib)."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src = sys.argv[1] if len(sys.argv) > 1 else "bench/scale.tsv"
dst = sys.argv[2] if len(sys.argv) > 2 else "docs/scale.png"
with open(src, newline="") as f:
    rows = list(csv.DictReader(f, delimiter="\t"))
if not rows:
    sys.exit(f"{src}: no rows")
dirs = [int(r["dirs"]) for r in rows]
first = [float(r["first_result_ms"]) for r in rows]
rss = [float(r["agent_rss_mb"]) for r in rows]
watches = [float(r["watches"]) for r in rows]

fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
a.plot(dirs, first, "o-", label="first tool result")
if rows[0].get("armed_ms"):
    a.plot(dirs, [float(r["armed_ms"]) for r in rows], "s--", label="every directory watched (background)")
    a.legend(loc="upper left", fontsize=8)
a.set_xscale("log")
a.set_xlabel("directories in the project (≈5 files each)")
a.set_ylabel("ms")
a.set_title("ms from pii's start")
a.set_ylim(bottom=0)
a.grid(True, which="both", alpha=0.3)
b.plot(dirs, rss, "o-", label="agent peak RSS (VmHWM), MB")
b.axhline(64, color="grey", ls="--", lw=1, label="target 64 MB")
b.set_xscale("log")
b.set_xlabel("directories in the project")
b.set_ylabel("MB")
b.set_title("agent memory")
b.set_ylim(bottom=0)
b.grid(True, which="both", alpha=0.3)
for x, y, w in zip(dirs, rss, watches):
    b.annotate(f"{w:.0f} watches", (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
b.legend(loc="upper left", fontsize=8)
fig.tight_layout()
fig.savefig(dst, dpi=110)
print(f"wrote {dst}")
