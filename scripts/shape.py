#!/usr/bin/env python3
"""The shape of the Rust code, checked (scripts/lint.sh runs it; CONVENTIONS.md says why).

1. No production source file (of the crates that ship: PRODUCTION) is longer than LIMIT lines
   (test files and inline `#[cfg(test)]` modules do not count; the test and bench crates are
   tools, not product, and are only checked for cycles).
2. No cycle between the modules of a crate. A module is a file (`src/a.rs`, `src/a/b.rs`); an
   edge is a path the file names (`crate::a::b`, `super::x`, `use crate::{a, b}`), resolved to
   the deepest module file it reaches. A parent's `mod child;` is not an edge. Tests are left
   out: they may use anything.

`--graph` prints each crate's edges. Exit status 1 on a violation, with what and where.
"""
import os
import re
import sys

LIMIT = 700
CRATES = ["protocol", "remote", "local", "tests", "bench"]
PRODUCTION = {"protocol", "remote", "local"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def production_text(text):
    """The file without its inline test modules."""
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"\s*#\[cfg\(test\)\]\s*$", line) and i + 1 < len(lines):
            nxt = lines[i + 1]
            m = re.match(r"(\s*)(pub(\([^)]*\))?\s+)?mod\s+\w+\s*(\{|;)", nxt)
            if m:
                if m.group(4) == ";":
                    i += 2
                    continue
                # Skip to the matching close brace.
                depth = 0
                j = i + 1
                while j < len(lines):
                    depth += lines[j].count("{") - lines[j].count("}")
                    if depth <= 0 and "{" in "".join(lines[i + 1 : j + 1]):
                        break
                    j += 1
                i = j + 1
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def strip_comments_and_strings(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def modules_of(src):
    """{module path tuple: file} for one crate's src dir, and the set of test files."""
    mods = {}
    tests = set()
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, src)[:-3].split(os.sep)
            if rel[-1] == "tests" or "tests" in rel[:-1]:
                tests.add(full)
                continue
            if rel in (["lib"], ["main"]):
                key = ()
            elif rel[-1] == "mod":
                key = tuple(rel[:-1])
            else:
                key = tuple(rel)
            if key == () and rel == ["main"] and () in mods:
                key = ("<main>",)  # a binary next to a library: its own node
            mods[key] = full
    return mods, tests


def resolve(mods, base, segs):
    """The deepest module reached by path `segs` from module `base`."""
    cur = list(base)
    i = 0
    while i < len(segs) and segs[i] in ("super", "self", "crate"):
        if segs[i] == "super":
            cur = cur[:-1]
        elif segs[i] == "crate":
            cur = []
        i += 1
    best = tuple(cur)
    for s in segs[i:]:
        cand = tuple(cur + [s])
        if cand in mods:
            cur.append(s)
            best = cand
        else:
            break
    return best


def expand_group(body):
    """`a, b::{c, d}, e as f` → [[a], [b, c], [b, d], [e]]."""
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    out = []
    for it in items:
        it = it.strip()
        if not it:
            continue
        it = re.sub(r"\s+as\s+\w+$", "", it)
        m = re.match(r"([\w:]*?)::\{(.*)\}$", it, re.S)
        if m:
            for sub in expand_group(m.group(2)):
                out.append(m.group(1).split("::") + sub)
        else:
            out.append(it.split("::"))
    return out


def edges_of(mods, key, text):
    text = strip_comments_and_strings(production_text(text))
    found = set()
    # Group imports: `crate::{…}`, `super::{…}`, `crate::a::{…}`.
    for m in re.finditer(r"\b((?:crate|super|self)(?:::\w+)*)::\{", text):
        start = m.end()
        depth, j = 1, start
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        for item in expand_group(text[start : j - 1]):
            found.add(resolve(mods, key, m.group(1).split("::") + item))
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", text):
        found.add(resolve(mods, key, m.group(1).split("::")))
    found.discard(key)
    # A module's own descendants are part of it; its ancestors are reached by `super`.
    return {f for f in found if f[: len(key)] != key or len(f) <= len(key)}


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def name(crate, key):
    return crate + "::" + ("::".join(key) if key else "(root)")


def main():
    show = "--graph" in sys.argv
    bad = 0
    for crate in CRATES:
        src = os.path.join(ROOT, crate, "src")
        mods, tests = modules_of(src)
        graph = {}
        for key, path in mods.items():
            text = open(path, encoding="utf-8").read()
            n = len(production_text(text).rstrip("\n").split("\n"))
            if n > LIMIT and crate in PRODUCTION:
                print(f"{os.path.relpath(path, ROOT)}: {n} production lines (limit {LIMIT})")
                bad += 1
            graph[key] = edges_of(mods, key, text)
        if show:
            for k in sorted(graph):
                print(f"{name(crate, k)} -> {', '.join(name(crate, e) for e in sorted(graph[k])) or '-'}")
        for comp in cycles(graph):
            print(f"module cycle in {crate}: " + " <-> ".join(name(crate, c) for c in comp))
            for a in comp:
                for b in sorted(graph[a]):
                    if b in comp:
                        print(f"    {name(crate, a)} uses {name(crate, b)}")
            bad += 1
    if bad:
        print(f"shape: {bad} violation(s)")
        return 1
    print("shape: no production file over %d lines, no module cycle" % LIMIT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
