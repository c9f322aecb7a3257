#!/usr/bin/env python3
"""Read `cargo modules dependencies` DOT output on stdin (modules only: run it with
--no-fns --no-traits --no-types --no-owns) and fail when the "uses" edges between modules
form a cycle. Used by scripts/module-cycles.sh."""
import re
import sys

edges = {}
for line in sys.stdin:
    m = re.match(r'\s*"([^"]+)" -> "([^"]+)" \[label="uses"', line)
    if m:
        a, b = m.groups()
        edges.setdefault(a, set()).add(b)
        edges.setdefault(b, set())
index, low, stack, on, sccs = {}, {}, [], set(), []
counter = [0]
sys.setrecursionlimit(100000)


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
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
            sccs.append(sorted(comp))


for v in list(edges):
    if v not in index:
        visit(v)
for comp in sccs:
    print("cycle:", " ".join(comp))
    for a in comp:
        print("   ", a, "->", " ".join(sorted(b for b in edges[a] if b in comp)))
count = sum(len(e) for e in edges.values())
print(f"{len(edges)} modules, {count} uses edges, {len(sccs)} cycles")
sys.exit(1 if sccs else 0)
