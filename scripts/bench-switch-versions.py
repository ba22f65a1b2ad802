#!/usr/bin/env python3
"""Two builds of hostel-switch-bench side by side: the switch's synthetic datapath figure
before and after a change, and the cost of rate limits that are configured but never hit.

Runs each contender as its own process for one round at a time, alternating (who goes first
rotates), so both see the same noisy host; prints medians and ratios as a Markdown table.

Usage: bench-switch-versions.py --before OLD_BIN --after NEW_BIN [--rounds 7] [--seconds 3]
       [--sizes 64,1500]
Contenders: `before` (OLD_BIN), `after` (NEW_BIN), `after+limits` (NEW_BIN --limits).
"""
import argparse
import re
import statistics
import subprocess
import sys

# "switch 64B  2.110  1.08  0.42c  5.063 ...": case, size, Mpps, Gbit/s, CPU (cores), Mpps/core.
ROW = re.compile(r"^(switch(?:\+limits)?) (\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)c\s+([\d.]+)")


def run(binary, extra, seconds, sizes):
    cmd = [binary, "--rounds", "1", "--seconds", str(seconds), "--sizes", sizes] + extra
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}")
    rows = {}
    for line in out.stdout.splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(2)] = (float(m.group(3)), float(m.group(6)))  # Mpps, Mpps/core
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--sizes", default="64,1500")
    a = ap.parse_args()
    contenders = [("before", a.before, []), ("after", a.after, []),
                  ("after+limits", a.after, ["--limits"])]
    samples = {c[0]: {} for c in contenders}
    for r in range(a.rounds):
        order = contenders[r % 3:] + contenders[:r % 3]
        for name, binary, extra in order:
            for size, v in run(binary, extra, a.seconds, a.sizes).items():
                samples[name].setdefault(size, []).append(v)
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    print(f"{a.rounds} rounds of {a.seconds} s per size, contenders alternating (first rotates).\n")
    print("| frames | metric (median, min–max) | before | after | after + limits "
          "| after / before | limits / after |")
    print("|---|---|---|---|---|---|---|")
    for size in samples["before"]:
        for idx, metric in ((0, "Mpps"), (1, "**Mpps per core**")):
            cells, meds = [], []
            for name, _, _ in contenders:
                vals = [s[idx] for s in samples[name].get(size, [])]
                if not vals:
                    cells.append("—"); meds.append(None); continue
                med = statistics.median(vals)
                meds.append(med)
                cells.append(f"{med:.3f} ({min(vals):.3f}–{max(vals):.3f})")
            ratio = lambda x, y: f"{x / y:.2f}" if x and y else "—"
            print(f"| {size} | {metric} | {' | '.join(cells)} | {ratio(meds[1], meds[0])} "
                  f"| {ratio(meds[2], meds[1])} |")


if __name__ == "__main__":
    main()
