#!/usr/bin/env python3
"""Prints `make bench-peers`' side-by-side table: Gantry's figures (from
`gantry-bench --only peer --json`) beside Prefect's (from prefect.py), one
Prefect column per worker polling setting, each with the ratio Gantry/Prefect
(below 1: Gantry's figure is lower; every figure here is better lower).
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ROWS = [
    # (label, figure name, unit)
    ("pickup latency p50", "pickup_p50_ms", "ms"),
    ("pickup latency p90", "pickup_p90_ms", "ms"),
    ("run started p50", "start_p50_ms", "ms"),
    ("run started p90", "start_p90_ms", "ms"),
    ("trivial run ended p50", "done_p50_ms", "ms"),
    ("burst {burst_runs:.0f} runs on {workers:.0f} workers: all picked up", "burst_picked_up_ms", "ms"),
    ("  all started", "burst_started_ms", "ms"),
    ("  all ended", "burst_done_ms", "ms"),
    ("idle worker RSS, median, fresh", "idle_worker_rss_kb", "kB"),
    ("idle worker RSS, median, after the runs", "idle_worker_rss_after_kb", "kB"),
    ("control plane RSS, after the runs", "server_rss_kb", "kB"),
    ("runs that did not succeed", "failed_runs", "count"),
    ("API answers 'busy, retry' (429/502/503)", "busy_answers", "count"),
]

NOTES = """\
How each figure is measured (the same way on both, from timestamps each system records itself):
- pickup latency: the run's creation (Gantry: its QUEUED transition; Prefect: its SCHEDULED state) to a
  worker claiming it (Gantry: PREPARING, the lease; Prefect: the first PENDING state, which the worker
  proposes before it starts anything). One run at a time on an idle pool, after a random pause of up to 1 s.
- run started: creation to the run's command running (Gantry: APPLYING, the launcher started `true`;
  Prefect: RUNNING, the flow's engine process started the flow). Trivial run ended: creation to FINISHED
  / COMPLETED. The trivial run is `true` on Gantry and a flow that does nothing on Prefect.
- burst: all runs created at once (Gantry over 8 connections; Prefect one after the other, as 8 concurrent
  creations make its SQLite answer 503), then from the first creation to the last claim, start and end.
  Every worker runs one run at a time (a launcher's GANTRY_MAX_CONCURRENT_RUNS=1, a Prefect worker's
  --limit 1).
- memory: resident set of each worker's process tree (Gantry: gantry-launcher; Prefect: `prefect worker
  start`), median over the workers, after 5 s idle; the control plane's likewise (`gantry server`;
  `prefect server start`, SQLite, UI off).
- Prefect workers poll every PREFECT_WORKER_QUERY_SECONDS (default 10 s, jittered); Gantry's launchers
  hold a long-poll the control plane answers when a run arrives."""


def human(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "ms":
        if value >= 10_000:
            return f"{value / 1000:.1f} s"
        if value >= 1000:
            return f"{value / 1000:.2f} s"
        return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"
    if unit == "kB":
        return f"{value / 1024:.1f} MB"
    return f"{value:.0f}"


def ratio(gantry: float, peer: float, unit: str) -> str:
    """Gantry/Prefect, and the inverse when Gantry's is the smaller."""
    if unit == "count" or gantry is None or peer is None or not peer or math.isnan(gantry) or math.isnan(peer):
        return ""
    r = gantry / peer
    if r <= 0:
        return "0"
    if r < 1:
        return f"{r:.2g} (1/{1 / r:,.0f})" if r < 0.1 else f"{r:.2f} (1/{1 / r:.1f})"
    return f"{r:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gantry", type=Path, required=True, help="gantry-bench's --json file")
    parser.add_argument("--prefect", type=Path, required=True, help="prefect.py's --out file")
    parser.add_argument("--gantry-version", default="Gantry")
    parser.add_argument("--note", action="append", default=[], help="a line printed under the table")
    args = parser.parse_args()

    report = json.loads(args.gantry.read_text())
    if report.get("errors"):
        raise SystemExit("gantry-bench reported errors: " + "; ".join(report["errors"]))
    gantry = report["figures"]
    prefect = json.loads(args.prefect.read_text())
    header = ["", args.gantry_version]
    for setting in prefect["settings"]:
        q = setting["query_seconds"]
        header += [f"Prefect {prefect['version']}, polling {q:g} s" + (" (default)" if q == 10 else ""),
                   "Gantry/Prefect"]
    lines = [header]
    for label, key, unit in ROWS:
        line = [label.format(**gantry), human(gantry.get(key), unit)]
        for setting in prefect["settings"]:
            peer = setting["figures"].get(key)
            line += [human(peer, unit), ratio(gantry.get(key), peer, unit)]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print()
    for n, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(line[1:], widths[1:])]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    print(f"\n{NOTES}")
    print(f"- pickup samples: {gantry.get('samples', 0):.0f} on Gantry, "
          + ", ".join(f"{s['figures'].get('samples', 0):.0f}" for s in prefect["settings"])
          + f" on Prefect (Python {prefect['python']}).")
    for setting in prefect["settings"]:
        if setting.get("error"):
            print(f"- Prefect, polling {setting['query_seconds']:g} s, failed: {setting['error']}")
    for note in args.note:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
