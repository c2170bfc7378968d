"""scripts/bench-peers.sh (`make bench-peers`, Gantry beside Prefect): the cheap checks only.

The benchmark itself installs Prefect from PyPI and runs for many minutes, so it is never part of
test-all; these prove its scripts are sound: shellcheck, the option checks, that the Prefect driver
at least parses and answers --help without Prefect installed, and the side-by-side table on a pair
of result files."""

import json
import subprocess
import sys

from conftest import ROOT, run, tool

SCRIPT = ROOT / "scripts" / "bench-peers.sh"
DIR = ROOT / "scripts" / "bench-peers"


def test_script_passes_shellcheck():
    result = run([tool("shellcheck"), str(SCRIPT)], check=False)
    assert result.returncode == 0, result.stdout


def test_bad_options_are_refused_before_anything_starts():
    result = run([str(SCRIPT), "--samples", "many"], check=False)
    assert result.returncode == 2
    assert "--samples needs a positive whole number, got 'many'" in result.stderr
    result = run([str(SCRIPT), "--query-seconds", "ten"], check=False)
    assert result.returncode == 2 and "--query-seconds" in result.stderr
    result = run([str(SCRIPT), "--bogus"], check=False)
    assert result.returncode == 2 and "unknown option '--bogus'" in result.stderr
    assert "--no-build" in run([str(SCRIPT), "--help"]).stdout


def test_prefect_driver_parses():
    # Its imports are the standard library's: --help works without Prefect.
    result = run([sys.executable, str(DIR / "prefect.py"), "--help"])
    assert "--query-seconds" in result.stdout
    flow = DIR / "flows" / "noop.py"
    compile(flow.read_text(), str(flow), "exec")  # no .pyc left in the tree


def test_table_puts_the_figures_side_by_side_with_ratios(tmp_path):
    figures = {"pickup_p50_ms": 2.0, "pickup_p90_ms": 4.0, "burst_done_ms": 1000.0,
               "burst_runs": 40, "workers": 4, "idle_worker_rss_kb": 5 * 1024, "samples": 20,
               "failed_runs": 0}
    (tmp_path / "gantry.json").write_text(json.dumps({"rows": [], "errors": [], "figures": figures}))
    prefect = {"pickup_p50_ms": 5000.0, "pickup_p90_ms": 8.0, "burst_done_ms": 100_000.0,
               "idle_worker_rss_kb": 100 * 1024, "samples": 20, "failed_runs": 1}
    (tmp_path / "prefect.json").write_text(json.dumps({
        "system": "Prefect", "version": "3.9.1", "python": "3.11.7",
        "settings": [{"query_seconds": 10.0, "figures": prefect}]}))
    result = run([sys.executable, str(DIR / "table.py"), "--gantry", str(tmp_path / "gantry.json"),
                  "--prefect", str(tmp_path / "prefect.json"), "--gantry-version", "gantry 9.9.9",
                  "--note", "machine: a test"])
    lines = result.stdout.splitlines()
    assert "gantry 9.9.9" in lines[1] and "Prefect 3.9.1, polling 10 s (default)" in lines[1]

    def row(label):
        return next(line for line in lines if line.startswith(label)).split()

    assert row("pickup latency p50")[-6:] == ["2.0", "ms", "5.00", "s", "0.0004", "(1/2,500)"]
    assert row("pickup latency p90")[-6:] == ["4.0", "ms", "8.0", "ms", "0.50", "(1/2.0)"]
    assert row("  all ended")[-2:] == ["0.01", "(1/100)"]
    assert row("idle worker RSS, median, fresh")[-6:] == ["5.0", "MB", "100.0", "MB", "0.05", "(1/20)"]
    assert row("runs that did not succeed")[-2:] == ["0", "1"]
    assert "burst 40 runs on 4 workers: all picked up" in result.stdout
    assert "- machine: a test" in result.stdout


def test_table_refuses_a_gantry_report_with_errors(tmp_path):
    (tmp_path / "gantry.json").write_text(json.dumps({"errors": ["peer: boom"], "figures": {}}))
    (tmp_path / "prefect.json").write_text(json.dumps({"version": "3.9.1", "python": "3", "settings": []}))
    result = subprocess.run([sys.executable, str(DIR / "table.py"), "--gantry", str(tmp_path / "gantry.json"),
                             "--prefect", str(tmp_path / "prefect.json")], capture_output=True, text=True)
    assert result.returncode != 0 and "peer: boom" in result.stderr
