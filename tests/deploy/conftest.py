"""Shared fixtures for the deployment tests: tools, a moto server, a Gantry control plane.

Every tool these tests drive is real (cfn-lint, moto, the AWS CLI, shellcheck, Helm's engine,
systemd-analyze, Docker). A missing tool skips its tests on a developer's machine, but fails
them under CI=true: CI must never pass by testing nothing.
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.request

import boto3
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
TEMPLATE = ROOT / "deploy" / "cloudformation" / "workerpool.yaml"
CHART = ROOT / "deploy" / "helm" / "gantry-workerpool"
UNIT = ROOT / "deploy" / "systemd" / "gantry-launcher.service"
DOCS = ROOT / "docs" / "deploying-worker-pools.md"
REGION = "eu-west-1"  # the docs' example region


def require(ok, what: str) -> None:
    if ok:
        return
    message = f"{what} is missing; scripts/install-test-deps.sh installs it"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def tool(name: str) -> str:
    path = shutil.which(name, path=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    require(path, name)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except OSError:
        return False


def run(args, *, env=None, check=True, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args[0]} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


# --- moto --------------------------------------------------------------------------------------

def aws_env(endpoint: str) -> dict:
    """The host environment minus every AWS_* variable, plus moto's endpoint and dummy keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_ENDPOINT_URL=endpoint,
    )
    return env


class Moto:
    """A moto server. The deploy commands go through the AWS CLI, as an operator's would; checks
    use boto3 in-process, since each AWS CLI start costs a second or more of CPU."""

    def __init__(self, url: str, aws_bin: str):
        self.url = url
        self.aws_bin = aws_bin
        self.env = aws_env(url)
        self._session = boto3.session.Session(aws_access_key_id="testing",
                                              aws_secret_access_key="testing", region_name=REGION)

    def client(self, service: str):
        return self._session.client(service, endpoint_url=self.url)

    def aws(self, *args: str, cwd=None) -> str:
        """Runs the AWS CLI against moto; returns its output."""
        return run([self.aws_bin, "--endpoint-url", self.url, *args], env=self.env, cwd=cwd).stdout

    def network(self) -> dict:
        """A VPC with two subnets and a security group, which the stack's parameters need."""
        ec2 = self.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24",
                              AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
            for i, zone in ((1, "a"), (2, "b"))
        ]
        sg = ec2.create_security_group(GroupName=f"gantry-workers-{vpc}", VpcId=vpc,
                                       Description="Gantry workers: no inbound")["GroupId"]
        images = ec2.describe_images(Owners=["amazon"], Filters=[
            {"Name": "architecture", "Values": ["x86_64"]}])["Images"]
        return {"vpc": vpc, "subnets": subnets, "security_group": sg, "ami": images[0]["ImageId"]}

    def stack_resources(self, stack: str) -> dict:
        resources = self.client("cloudformation").describe_stack_resources(StackName=stack)
        # moto lists the resources it only fakes (the lifecycle hook) with no IDs at all.
        return {r["LogicalResourceId"]: r for r in resources["StackResources"] if "LogicalResourceId" in r}


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    server = tool("moto_server")
    aws_bin = tool("aws")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    with open(log, "w") as out:
        proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is not None or http_ok(f"{url}/moto-api/"), 30, "moto_server")
        assert proc.poll() is None, f"moto_server exited:\n{log.read_text()}"
        yield Moto(url, aws_bin)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- Gantry ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def gantry_bins():
    """target/debug/gantry and gantry-launcher, built if missing (scripts/test-all.sh builds them)."""
    bins = ROOT / "target" / "debug"
    gantry, launcher = bins / "gantry", bins / "gantry-launcher"
    if not (gantry.exists() and launcher.exists()):
        require(shutil.which("cargo"), "cargo")
        run(["cargo", "build", "--bin", "gantry", "--bin", "gantry-launcher"], cwd=ROOT, timeout=1800)
    return gantry, launcher


class ControlPlane:
    ADMIN_TOKEN = "deploy-tests-admin-token-0123456789"

    def __init__(self, gantry: pathlib.Path, data_dir: pathlib.Path, public_url: str | None = None):
        self.gantry = gantry
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.public_url = public_url or self.url
        self.log = data_dir / "server.log"
        args = [str(gantry), "server", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(data_dir),
                "--public-url", self.public_url]
        env = dict(os.environ, GANTRY_ADMIN_TOKEN=self.ADMIN_TOKEN)
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_until(lambda: self.proc.poll() is not None or http_ok(f"{self.url}/api/v1/health"), 30,
                   "the Gantry control plane")
        assert self.proc.poll() is None, f"gantry server exited:\n{self.log.read_text()}"

    def cli(self, *args: str, json_output=True):
        env = dict(os.environ, GANTRY_URL=self.url, GANTRY_API_TOKEN=self.ADMIN_TOKEN)
        out = run([str(self.gantry), *(["--output", "json"] if json_output else []), *args], env=env).stdout
        return json.loads(out) if json_output else out

    def create_pool(self, name: str, work: pathlib.Path) -> dict:
        """A pool from a fresh key: returns the token and base64 of the PEM key, as the secret holds."""
        key, csr = work / f"{name}.key", work / f"{name}.csr"
        run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(csr), "-subj", f"/CN={name}"])
        pool = self.cli("pool", "create", name, "--csr", str(csr))
        import base64
        return {"name": name, "token": pool["token"],
                "private_key": base64.b64encode(key.read_bytes()).decode()}

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def control_plane_factory(gantry_bins, tmp_path):
    planes = []

    def start(public_url: str | None = None) -> ControlPlane:
        data = tmp_path / f"gantry-{len(planes)}"
        data.mkdir()
        plane = ControlPlane(gantry_bins[0], data, public_url)
        planes.append(plane)
        return plane

    yield start
    for plane in planes:
        plane.stop()
