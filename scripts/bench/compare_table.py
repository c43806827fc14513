#!/usr/bin/env python3
"""One row per run of scripts/bench-compare.sh, from its JSON files.

    compare_table.py DIR        # DIR holds a-1.json, b-1.json, a-2.json, ...

Rows in the order the runs were made, so that each B reads against the A
just before it.
"""

import json
import pathlib
import sys


def scenario(run, name):
    return next(s for s in run["scenarios"] if s["name"] == name)


def row(label, run):
    c50, c400, paced = (scenario(run, n) for n in ("closed-50", "closed-400", "paced-50"))
    cpu = ", ".join(f"{s['broker_cpu_us_per_issuance']:.0f}" for s in (c50, c400, paced))
    return (
        f"| {label} | {c50['issued_per_s']:,.0f} | {c400['issued_per_s']:,.0f} | {cpu} "
        f"| {paced['latency_us']['p99'] / 1000:.2f} ms | {paced['send_lag_us']['p99'] / 1000:.2f} ms "
        f"| {c400['vm_rss_kb_after'] / 1024:.1f} MB | {run['launch_to_ready_ms']:.1f} ms "
        f"| {run['loadavg_before'].split()[0]} |"
    )


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    folder = pathlib.Path(sys.argv[1])
    print("| run | closed-50 issued/s | closed-400 issued/s | CPU µs / issuance (c-50, c-400, paced) "
          "| paced p99 (corrected) | generator lag p99 | RSS after closed-400 | ready | load before |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    pair = 1
    while (folder / f"a-{pair}.json").exists():
        for side in ("a", "b"):
            path = folder / f"{side}-{pair}.json"
            if path.exists():
                print(row(f"{side.upper()} {pair}", json.loads(path.read_text())))
        pair += 1


if __name__ == "__main__":
    main()
