"""Schemathesis over /api/v1/openapi.json against a live `gantry server`: every answer keeps
the contract the document states (issue 11, item 15).

Checks: not_a_server_error, status_code_conformance, content_type_conformance and
response_schema_conformance, in schemathesis' coverage, fuzzing and stateful phases, positive
and negative data. Every user operation is tested with the admin token, their path and query
parameters drawn half the time from the seeded pool, stack and runs (so real objects are
validated against their schemas) and otherwise generated. The worker protocol is tested twice:
with a real worker session in a pool of its own, and without one (its errors, 401 and 429 once
the failed-authentication limit trips, must be the documented JSON body too).

Bounded and repeatable: a fixed seed, one worker, a cap on examples per operation, no example
database. Each run's summary is printed; its reports are kept in the test's tmp dir.
"""

import json
import os
import pathlib
import re
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import ADMIN_TOKEN, VENV_BIN, register_worker, require

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
SEED = 20261201
# Examples per operation; the coverage phase adds its own boundary and negative cases.
USER_EXAMPLES = int(os.environ.get("GANTRY_SCHEMATHESIS_EXAMPLES", "50"))
WORKER_EXAMPLES = 20
TIMEOUT = 600


def toml_list(values) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def config_file(server, path: pathlib.Path) -> pathlib.Path:
    """Dictionaries of the seeded names and IDs, bound to the read-only operations' parameters
    with probability 0.5: the other half of the cases still get generated values."""
    seed = server.seed
    if seed is None:
        # A poll with nothing to hand out holds the call for `wait_ms` (up to 25 s): positive
        # cases only, with short waits (the coverage phase's boundaries would ignore them). The
        # poll's malformed bodies go through the same extractor as every other call's.
        path.write_text("""
[dictionaries.short_waits]
values = [0, 100]

[[operations]]
include-name = "POST /worker/poll"
parameters = { "body.wait_ms" = { dictionary = "short_waits", probability = 1.0 } }
generation = { mode = "positive" }
phases = { coverage = { enabled = false } }
""")
        return path
    runs = [run["id"] for run in seed["runs"]]
    pools = [seed["pool"]["name"], seed["pool"]["id"]]
    stacks = [seed["stack"]["name"], seed["stack"]["id"]]
    half = lambda name: f'{{ dictionary = "{name}", probability = 0.5 }}'  # noqa: E731
    path.write_text(f"""
[dictionaries.pools]
values = {toml_list(pools)}
[dictionaries.stacks]
values = {toml_list(stacks)}
[dictionaries.runs]
values = {toml_list(runs)}
[dictionaries.states]
values = {toml_list(["QUEUED", "READY", "FINISHED"])}

[dictionaries.short_waits]
values = [0, 1]

[[operations]]
include-name = "GET /runs/{{run}}"
parameters = {{ "path.run" = {half("runs")} }}

# A tail of a real run with no new log holds the call for `wait` seconds (up to 30): positive
# cases only, with short waits (negative cases and the coverage phase's boundaries would not
# keep them short). Its bad query values are in test_rejections_are_the_json_error_body.
[[operations]]
include-name = "GET /runs/{{run}}/logs"
parameters = {{ "path.run" = {half("runs")}, "query.wait" = {{ dictionary = "short_waits", probability = 1.0 }} }}
generation = {{ mode = "positive" }}
phases = {{ coverage = {{ enabled = false }} }}

# The first [[operations]] an operation matches applies: this one last.
[[operations]]
include-method = "GET"
parameters = {{ "path.pool" = {half("pools")}, "query.pool" = {half("pools")}, "path.stack" = {half("stacks")}, "query.state" = {half("states")} }}
""")
    return path


def schemathesis(server, tmp_path: pathlib.Path, name: str, examples: int, *selection: str,
                 token: str = ADMIN_TOKEN):
    binary = VENV_BIN / "schemathesis"
    require(binary.exists(), "schemathesis (requirements-test.txt)")
    reports = tmp_path / name
    args = [
        str(binary), "--config-file", str(config_file(server, tmp_path / f"{name}.toml")),
        "run", f"{server.url}/api/v1/openapi.json",
        "--checks", CHECKS,
        "--header", f"Authorization: Bearer {token}",
        "--max-examples", str(examples),
        "--seed", str(SEED),
        "--workers", "1",
        "--generation-database", "none",
        "--request-timeout", "40",
        "--no-color",
        "--report", "junit,ndjson", "--report-dir", str(reports),
        *selection,
    ]
    started = time.monotonic()
    result = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    summary = output[output.rfind("SUMMARY"):] if "SUMMARY" in output else output[-3000:]
    print(f"\n--- schemathesis ({name}) in {elapsed:.0f}s ---\n{summary}")
    assert result.returncode == 0, f"schemathesis found contract breaks ({name}):\n{output[-20000:]}"
    tested = re.search(r"Tested: (\d+)", output)
    return output, int(tested.group(1)) if tested else 0


@pytest.mark.parametrize("request_args,status,code", [
    (("POST", "/api/v1/pools", b"{", "application/json"), 400, "invalid_input"),
    (("POST", "/api/v1/pools", b"{}", "text/plain"), 415, "unsupported_media_type"),
    (("DELETE", "/api/v1/pools/contract?force=null", None, None), 400, "invalid_input"),
    (("GET", "/api/v1/runs/r/logs?wait=soon", None, None), 400, "invalid_input"),
    (("GET", "/api/v1/runs/r/logs?wait=-1&from=x", None, None), 400, "invalid_input"),
    (("GET", "/api/v1/no-such-route", None, None), 404, "not_found"),
    (("PUT", "/api/v1/runs", None, None), 405, "method_not_allowed"),
    (("POST", "/api/v1/worker/poll", b"{}", "application/json"), 401, "unauthorized"),
])
def test_rejections_are_the_json_error_body(seeded_server, request_args, status, code):
    """The cases schemathesis first found, by hand against the live server."""
    method, path, body, content_type = request_args
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(f"{seeded_server.url}{path}", method=method, data=body, headers=headers)
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == status
    assert error.value.headers["Content-Type"] == "application/json"
    assert json.loads(error.value.read())["error"]["code"] == code


def operations(server, worker: bool) -> int:
    document = server.api("GET", "/openapi.json")
    return sum(1 for item in document["paths"].values() for operation in item.values()
               if ("worker protocol" in operation.get("tags", [])) == worker)


def test_the_user_api_keeps_its_contract(seeded_server, tmp_path):
    user_operations = operations(seeded_server, worker=False)
    output, tested = schemathesis(seeded_server, tmp_path, "user", USER_EXAMPLES,
                                  "--exclude-tag", "worker protocol")
    assert tested == user_operations, f"{tested} of {user_operations} user operations tested:\n{output}"


def test_the_worker_protocol_keeps_its_contract(bare_server, gantry_bin, tmp_path):
    """With a real worker session, in a pool with no runs: every run a call names is another
    pool's or none, so the calls about runs answer lease_lost (409) or not found, never touching
    a run. Register and deregister (which ends the session) are in the unauthenticated run."""
    session = register_worker(bare_server, gantry_bin, tmp_path, "contract-idle")
    worker_operations = operations(bare_server, worker=True)
    output, tested = schemathesis(bare_server, tmp_path, "worker-session", WORKER_EXAMPLES,
                                  "--include-tag", "worker protocol",
                                  "--exclude-path", "/worker/register",
                                  "--exclude-path", "/worker/deregister", token=session)
    assert tested == worker_operations - 2, f"{tested} of {worker_operations - 2} tested:\n{output}"


def test_the_worker_protocol_answers_its_errors_in_json(bare_server, tmp_path):
    """Every worker call without a worker session (the admin token is none): on a server of its
    own, as its 401s trip the failed-authentication limit (then 429s)."""
    worker_operations = operations(bare_server, worker=True)
    output, tested = schemathesis(bare_server, tmp_path, "worker", WORKER_EXAMPLES,
                                  "--include-tag", "worker protocol")
    assert tested == worker_operations, f"{tested} of {worker_operations} worker operations tested:\n{output}"
