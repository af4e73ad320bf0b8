#!/usr/bin/env python3
"""Compare restore rows of two bench/results.json files, each against its own floor.

    python3 bench/compare.py BASELINE.json NEW.json [NEW2.json ...]

For every row (kind, layout, guarded, load) present in both: p50/floor and p90/floor of
the baseline and of each new run (floor = the same run's floor p50), and the change in
percent. A row is within noise when the change is at most 25% in each new run (or the new
run is faster). Exit status 0 either way: this reports, it does not judge a build.
"""
import json
import sys


def rows(path):
    data = json.load(open(path))
    out = {}
    for r in data.get("restore", []):
        key = (r["kind"], r["layout"], r["guarded"], r.get("load", ""))
        floor = r["floor_p50_ms"] or float("nan")
        out[key] = (r["p50_ms"] / floor, r["p90_ms"] / floor)
    return out


def main():
    base = rows(sys.argv[1])
    runs = [rows(p) for p in sys.argv[2:]]
    print(f"{'kind':7} {'layout':11} {'guarded':>7} {'load':12} {'base p50/f':>10} {'p90/f':>6}  " +
          "  ".join(f"run{i + 1} p50/f  p90/f  chg" for i in range(len(runs))) + "  within 25%")
    outside = 0
    for key in sorted(base, key=lambda k: (k[0], k[1], k[2], k[3])):
        if not all(key in r for r in runs):
            continue
        b50, b90 = base[key]
        cells, ok = [], True
        for r in runs:
            n50, n90 = r[key]
            worst = max(n50 / b50 - 1, n90 / b90 - 1)
            ok &= worst <= 0.25
            cells.append(f"{n50:10.2f} {n90:6.2f} {worst * 100:+4.0f}%")
        outside += not ok
        print(f"{key[0]:7} {key[1]:11} {key[2]:>7} {key[3]:12} {b50:10.2f} {b90:6.2f}  " + "  ".join(cells) +
              ("  yes" if ok else "  NO"))
    print(f"rows outside 25% in some run: {outside}")


if __name__ == "__main__":
    main()
