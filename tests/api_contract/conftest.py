"""A real `gantry server` for the API contract tests: a temp data dir, a free port, an admin
token from GANTRY_ADMIN_TOKEN, and a little data seeded through the API (a pool, a stack, runs)
so that list and show operations answer real objects.
"""

import base64
import json
import os
import pathlib
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
ADMIN_TOKEN = "gantry-api-contract-admin-token-0123456789"


def require(ok, what: str) -> None:
    """A missing tool skips on a developer's machine, and fails under CI=true."""
    if ok:
        return
    message = f"{what} is missing; scripts/install-test-deps.sh installs it"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, gantry: pathlib.Path, data_dir: pathlib.Path, log: pathlib.Path):
        self.gantry = gantry
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "GANTRY_ADMIN_TOKEN": ADMIN_TOKEN, "GANTRY_LOG_FORMAT": "json"}
        self.proc = subprocess.Popen(
            [str(gantry), "server", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(data_dir)],
            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self._healthy():
            assert self.proc.poll() is None, f"gantry server exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"gantry server did not answer:\n{log.read_text()}"
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, method: str, path: str, body=None):
        request = urllib.request.Request(
            f"{self.url}/api/v1{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def gantry_bin() -> pathlib.Path:
    """target/debug/gantry, built if missing (scripts/test-all.sh builds it first)."""
    gantry = pathlib.Path(os.environ.get("GANTRY_BIN", ROOT / "target" / "debug" / "gantry"))
    if not gantry.exists():
        subprocess.run(["cargo", "build", "--bin", "gantry"], cwd=ROOT, check=True, timeout=1800)
    return gantry


@pytest.fixture
def bare_server(gantry_bin, tmp_path):
    """A fresh control plane with nothing in it, for a run that must not disturb the others."""
    server = Server(gantry_bin, tmp_path / "data", tmp_path / "server.log")
    server.seed = None
    try:
        yield server
    finally:
        server.stop()


def register_worker(server: Server, gantry: pathlib.Path, work: pathlib.Path, pool_name: str) -> str:
    """A pool of its own and a worker registered in it, as a launcher would: the pool token's
    credential and an RSA signature over a fresh nonce. Returns the worker's session token."""
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding
    except ImportError:
        require(False, "the cryptography package (requirements-test.txt)")
    keys = work / pool_name
    keys.mkdir()
    subprocess.run([str(gantry), "pool", "keygen", "--out-dir", str(keys), "--name", pool_name],
                   check=True, capture_output=True, timeout=120)
    pool = server.api("POST", "/pools", {"name": pool_name, "csr": (keys / "pool.csr").read_text()})
    token = json.loads(base64.b64decode(pool["token"]))
    key = serialization.load_pem_private_key((keys / "pool.key").read_bytes(), password=None)
    timestamp, nonce = int(time.time() * 1000), secrets.token_hex(16)
    message = f"gantry-register-v1\n{token['pool_id']}\n{timestamp}\n{nonce}\n".encode()
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    version = server.api("GET", "/version")["version"]
    registered = server.api("POST", "/worker/register", {
        "pool_id": token["pool_id"], "credential": token["credential"], "version": version,
        "hostname": "api-contract", "max_concurrent_runs": 1, "timestamp_ms": timestamp,
        "nonce": nonce, "signature": base64.b64encode(signature).decode()})
    return registered["session_token"]


@pytest.fixture(scope="session")
def seeded_server(gantry_bin, tmp_path_factory):
    """A fresh control plane with a pool, a stack with a queued run, and a task run."""
    work = tmp_path_factory.mktemp("api-contract")
    server = Server(gantry_bin, work / "data", work / "server.log")
    try:
        subprocess.run([str(gantry_bin), "pool", "keygen", "--out-dir", str(work), "--name", "contract"],
                       check=True, capture_output=True, timeout=120)
        pool = server.api("POST", "/pools", {"name": "contract", "csr": (work / "pool.csr").read_text(),
                                             "description": "seeded for the API contract tests"})
        stack = server.api("POST", "/stacks", {"name": "contract-stack", "pool": "contract",
                                               "git_url": "https://example.com/infra.git", "git_ref": "main",
                                               "project_root": "envs/prod", "env": {"REGION": "eu-west-1"},
                                               "labels": ["contract"]})
        tracked = server.api("POST", "/stacks/contract-stack/runs", {"type": "tracked"})
        task = server.api("POST", "/runs", {"pool": "contract", "command": ["echo", "hello"],
                                            "env": {"GREETING": "hi"}})
        server.seed = {"pool": pool, "stack": stack, "runs": [tracked, task], "work": work}
        yield server
    finally:
        server.stop()
