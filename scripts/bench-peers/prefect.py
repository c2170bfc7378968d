#!/usr/bin/env python3
"""Prefect's half of `make bench-peers` (scripts/bench-peers.sh runs it with
the throwaway venv's Python, where Prefect is installed).

It starts a Prefect server (SQLite, its own PREFECT_HOME in a temporary
directory, on a free port of 127.0.0.1). Then, once per worker polling
setting (PREFECT_WORKER_QUERY_SECONDS, e.g. Prefect's default 10 s and 1 s),
it creates a process work pool, deploys flows/noop.py (a flow that does
nothing: Gantry's `true`), starts N workers with `--limit 1` (one run at a
time, as a Gantry launcher), and measures what crates/bench's `peer`
benchmark measures on Gantry, under the same names:

- pickup latency: one run at a time on an idle pool, after a random pause;
- a burst: all runs created at once, until the last one ended;
- idle worker memory: each worker's process tree RSS, fresh and after the runs.

Every latency is between two timestamps Prefect recorded in the flow run's
state history: SCHEDULED (the run's creation, Gantry's QUEUED) and the first
PENDING (a worker claimed it: Gantry's PREPARING), RUNNING (the flow's
process started: Gantry's APPLYING) or the final state (COMPLETED: Gantry's
FINISHED). The harness's own polling only decides when it looks, never a
figure. Everything it started is stopped on exit, Ctrl-C and SIGTERM.
Standard library only, besides the `prefect` command itself.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

FLOWS = Path(__file__).resolve().parent / "flows"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
CHILDREN: list[subprocess.Popen] = []
LIBC = ctypes.CDLL(None, use_errno=True)
# No proxy: everything is on 127.0.0.1.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))

DEPLOY = """
import sys
from prefect import flow
deployment = flow.from_source(source=sys.argv[1], entrypoint="noop.py:noop")
print(deployment.deploy(name="noop", work_pool_name=sys.argv[2], print_next_steps=False))
"""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def die_with_parent() -> None:
    # PR_SET_PDEATHSIG: even a `kill -9` of this driver takes the child along.
    LIBC.prctl(1, signal.SIGKILL)


def spawn(cmd: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    """A child in its own session (a Ctrl-C reaches the driver only, which
    stops the children in order) and its own process group (stopped whole)."""
    out = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True, preexec_fn=die_with_parent)
    CHILDREN.append(proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL after 5 s (a worker whose server
    is gone can take much longer to give up)."""
    if proc in CHILDREN:
        CHILDREN.remove(proc)
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # the group's other members, if the leader went first
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_kb(pid: int) -> int:
    """RSS of a process and all its descendants, as crates/bench's tree_rss_kb."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rfind(")") + 1:].split()[1])
    tree = [pid]
    for parent in tree:
        tree.extend(child for child, p in parents.items() if p == parent)
    total = 0
    for member in tree:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass  # ended meanwhile
    return total


def ts(text: str) -> float:
    """A Prefect timestamp in ms since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000.0


def nearest_rank(values: list[float], p: float) -> float:
    """Nearest-rank percentile, as crates/bench's summarize."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = max(1, min(len(ordered), -(-p * len(ordered) // 100)))
    return ordered[int(index) - 1]


class Api:
    def __init__(self, base: str):
        self.base = base
        self.retried = 0  # answers 429/502/503, from threads too (an estimate then)

    def call(self, method: str, path: str, body=None, timeout: float = 30):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        # Retried as Prefect's own client does (with more patience): its
        # server answers 503 while SQLite is locked by another writer, which
        # the burst's concurrent creations provoke on a busy machine.
        for pause in (0.5, 1, 2, 4, 8, 15, 30, None):
            try:
                with HTTP.open(request, timeout=timeout) as response:
                    return json.loads(response.read() or b"null")
            except urllib.error.HTTPError as error:
                if error.code not in (429, 502, 503) or pause is None:
                    detail = error.read()[:500].decode(errors="replace")
                    raise RuntimeError(f"{method} {path}: HTTP {error.code}: {detail}") from None
            self.retried += 1
            time.sleep(pause + random.uniform(0, pause / 2))

    def create_run(self, deployment: str) -> str:
        return self.call("POST", f"/deployments/{deployment}/create_flow_run", {})["id"]

    def states(self, run: str) -> list[dict]:
        states = self.call("GET", f"/flow_run_states/?flow_run_id={run}")
        return sorted(states, key=lambda s: ts(s["timestamp"]))

    def state_type(self, run: str) -> str:
        return self.call("GET", f"/flow_runs/{run}")["state_type"]

    def ended_count(self, runs: list[str]) -> int:
        return self.call("POST", "/flow_runs/count", {"flow_runs": {
            "id": {"any_": runs}, "state": {"type": {"any_": sorted(FINAL)}}}})

    def online_workers(self, pool: str) -> int:
        workers = self.call("POST", f"/work_pools/{pool}/workers/filter", {})
        return sum(1 for w in workers if w.get("status") == "ONLINE")


def milestones(states: list[dict]) -> dict[str, float]:
    """When the run was created, first picked up, started and ended (ms)."""
    first = {}
    for state in states:
        first.setdefault(state["type"], ts(state["timestamp"]))
    ended = [ts(s["timestamp"]) for s in states if s["type"] in FINAL]
    return {"created": first.get("SCHEDULED"), "pickup": first.get("PENDING"),
            "start": first.get("RUNNING"), "done": ended[-1] if ended else None}


def ended(api: Api, run: str) -> str | None:
    """The run's final state type, None while it has not ended."""
    state = api.state_type(run)
    return state if state in FINAL else None


def wait_until(check, limit: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {limit:.0f} s")
        time.sleep(every)


def measure(api: Api, args, query_seconds: float, env: dict[str, str], work: Path) -> dict:
    prefect = str(Path(sys.executable).parent / "prefect")
    pool = "bench-q" + f"{query_seconds:g}".replace(".", "_")
    subprocess.run([prefect, "work-pool", "create", pool, "--type", "process"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    deployed = subprocess.run([sys.executable, "-c", DEPLOY, str(FLOWS), pool], env=env, check=True,
                              capture_output=True, text=True)
    deployment = deployed.stdout.strip().splitlines()[-1]
    worker_env = dict(env, PREFECT_WORKER_QUERY_SECONDS=f"{query_seconds:g}")
    workers = [spawn([prefect, "worker", "start", "--pool", pool, "--limit", "1", "--name", f"{pool}-{i}"],
                     work / f"{pool}-worker-{i}.log", worker_env) for i in range(args.workers)]
    wait_until(lambda: api.online_workers(pool) >= args.workers, 120, f"{args.workers} workers online")
    time.sleep(args.settle)
    figures = {"idle_worker_rss_kb": statistics.median(tree_rss_kb(w.pid) for w in workers)}
    log(f"  idle worker RSS, median: {figures['idle_worker_rss_kb'] / 1024:.1f} MB")

    samples = {"pickup": [], "start": [], "done": []}
    failed = 0
    for i in range(args.samples):
        time.sleep(random.uniform(0, args.jitter))
        run = api.create_run(deployment)
        final = wait_until(lambda: ended(api, run), 180, f"flow run {run} to end", every=0.25)
        failed += final != "COMPLETED"
        at = milestones(api.states(run))
        for key in samples:
            if at[key] is not None and at["created"] is not None:
                samples[key].append(at[key] - at["created"])
        log(f"  sample {i + 1}/{args.samples}: picked up after {samples['pickup'][-1]:.0f} ms, {final}")
    for key, values in samples.items():
        figures[f"{key}_p50_ms"] = nearest_rank(values, 50)
        figures[f"{key}_p90_ms"] = nearest_rank(values, 90)
    figures["samples"] = len(samples["pickup"])

    log(f"  burst: {args.burst} runs on {args.workers} workers")
    # crates/bench creates Gantry's over 8 connections; 8 concurrent creations
    # here made Prefect's SQLite answer 503 past a minute of retries on a busy
    # 2-core machine, so one after the other (a few seconds at most, against
    # a burst of minutes).
    with ThreadPoolExecutor(args.burst_connections) as submitters:
        runs = list(submitters.map(lambda _: api.create_run(deployment), range(args.burst)))
    wait_until(lambda: api.ended_count(runs) == len(runs), args.burst_limit, f"{args.burst} runs to end")
    at = [milestones(api.states(run)) for run in runs]
    failed += sum(1 for run in runs if api.state_type(run) != "COMPLETED")
    first = min(a["created"] for a in at)
    for key in ("pickup", "start", "done"):
        name = {"pickup": "burst_picked_up_ms", "start": "burst_started_ms", "done": "burst_done_ms"}[key]
        figures[name] = max(a[key] for a in at if a[key] is not None) - first
        log(f"  {name}: {figures[name]:.0f} ms")
    figures["burst_runs"] = args.burst
    figures["workers"] = args.workers

    time.sleep(args.settle)
    figures["idle_worker_rss_after_kb"] = statistics.median(tree_rss_kb(w.pid) for w in workers)
    figures["failed_runs"] = failed
    figures["busy_answers"] = api.retried
    api.retried = 0
    for worker in workers:
        stop(worker)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="write the figures here (JSON)")
    parser.add_argument("--query-seconds", default="10,1",
                        help="worker polling settings to measure, comma-separated (default: 10,1)")
    parser.add_argument("--samples", type=int, default=20, help="pickup latency samples")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--burst", type=int, default=40)
    parser.add_argument("--jitter", type=float, default=1.0,
                        help="longest random pause before each sample, seconds")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle before reading memory")
    parser.add_argument("--burst-connections", type=int, default=1,
                        help="concurrent creations in the burst (default 1)")
    parser.add_argument("--burst-limit", type=float, default=900, help="seconds the burst may take")
    parser.add_argument("--tmp-dir", type=Path, help="make the temporary directory here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    args = parser.parse_args()

    def interrupted(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)

    work = Path(tempfile.mkdtemp(prefix="prefect-bench-", dir=args.tmp_dir))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    (work / "tmp").mkdir()
    # TMPDIR: what Prefect's processes leave in temporary directories (a
    # killed flow run's workspace files) goes with the work directory.
    env.update(TMPDIR=str(work / "tmp"), PREFECT_HOME=str(work / "home"), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    api = Api(env["PREFECT_API_URL"])
    result = {"system": "Prefect", "version": version("prefect"),
              "python": sys.version.split()[0], "settings": []}
    try:
        log(f"== Prefect {result['version']}: server on 127.0.0.1:{port}, logs in {work}")
        server = spawn([str(Path(sys.executable).parent / "prefect"), "server", "start",
                        "--host", "127.0.0.1", "--port", str(port)], work / "server.log", env)

        def healthy():
            if server.poll() is not None:
                raise RuntimeError(f"the Prefect server exited; see {work / 'server.log'}")
            try:
                return api.call("GET", "/health", timeout=2)
            except (OSError, RuntimeError):
                return False

        wait_until(healthy, 120, "the Prefect server to answer")
        for q in (float(q) for q in args.query_seconds.split(",")):
            log(f"\n== Prefect, PREFECT_WORKER_QUERY_SECONDS={q:g}")
            try:
                figures = measure(api, args, q, env, work)
                figures["server_rss_kb"] = tree_rss_kb(server.pid)
                result["settings"].append({"query_seconds": q, "figures": figures})
            except RuntimeError as error:  # the other settings may still succeed
                log(f"  ERROR: {error}")
                result["settings"].append({"query_seconds": q, "figures": {}, "error": str(error)})
                for child in CHILDREN[1:]:  # this setting's workers
                    stop(child)
            args.out.write_text(json.dumps(result, indent=2))
        return 1 if any("error" in s for s in result["settings"]) else 0
    finally:
        for child in reversed(CHILDREN[:]):  # workers before the server
            stop(child)
        if args.keep:
            log(f"(kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
