"""The user data, executed for real: deployed with the template on moto, taken back out of the
launch template, and run on a systemd "instance" (worker_host.py) against moto's S3 and Secrets
Manager and a running Gantry control plane. The launcher it starts must register and complete
runs, and drain when the autoscaling group terminates the instance."""

import base64
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

from cfn import launch_template_user_data
from conftest import REGION, TEMPLATE, free_port, run, tool, wait_until
from fakes.imds import FakeImds
from worker_host import WorkerHost, image

BUCKET = "gantry-test-binaries"
DRAINED_RUN_SECONDS = 12


@pytest.fixture(scope="module")
def worker_image():
    return image()


@pytest.fixture(scope="module")
def aws_world(moto, gantry_bins, tmp_path_factory):
    """Network, and the bucket holding the launcher as the docs lay it out."""
    net = moto.network()
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    # The debug build without its debug info: the same program, a fifth of the bytes to move.
    stripped = tmp_path_factory.mktemp("launcher") / "gantry-launcher"
    run([tool("objcopy"), "--strip-debug", str(gantry_bins[1]), str(stripped)])
    launcher = stripped.read_bytes()
    digest = hashlib.sha256(launcher).hexdigest()
    s3.put_object(Bucket=BUCKET, Key="gantry-launcher", Body=launcher)
    s3.put_object(Bucket=BUCKET, Key="gantry-launcher.sha256", Body=f"{digest}  gantry-launcher\n")
    return {"network": net, "launcher_sha256": digest}


def deploy(moto, aws_world, stack: str, params: dict) -> dict:
    """Deploys the template with the docs' command shape; returns the instance's identity and
    the user data from the launch template."""
    net = aws_world["network"]
    overrides = {
        "BinariesBucket": BUCKET,
        "SecurityGroups": net["security_group"],
        "Subnets": ",".join(net["subnets"]),
        "ImageId": net["ami"],
        **params,
    }
    moto.aws("cloudformation", "deploy", "--stack-name", stack, "--template-file", str(TEMPLATE),
             "--region", REGION, "--parameter-overrides", *[f"{k}={v}" for k, v in overrides.items()],
             "--capabilities", "CAPABILITY_NAMED_IAM")
    resources = moto.stack_resources(stack)
    group_name = resources["AutoScalingGroup"]["PhysicalResourceId"]
    group = moto.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[group_name])["AutoScalingGroups"][0]
    return {
        "group": group_name,
        "instance_id": group["Instances"][0]["InstanceId"],
        "ami_id": net["ami"],
        "user_data": launch_template_user_data(moto, resources["LaunchTemplate"]["PhysicalResourceId"]),
    }


def create_secret(moto, name: str, value: str) -> None:
    moto.client("secretsmanager").create_secret(Name=name, SecretString=value)


@pytest.fixture
def hosts(worker_image):
    made = []

    def boot() -> WorkerHost:
        host = WorkerHost(worker_image)
        made.append(host)
        return host

    yield boot
    for host in made:
        host.remove()


@pytest.fixture
def imds_factory():
    made = []

    def start(instance_id, ami_id):
        imds = FakeImds(instance_id, ami_id, REGION)
        made.append(imds)
        return imds

    yield start
    for imds in made:
        imds.close()


def boot_env(moto, imds) -> dict:
    # As on EC2, credentials come from the (fake) metadata service: no keys are passed in.
    return {"AWS_ENDPOINT_URL": moto.url, "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url}


def wait_worker(plane, pool: str, timeout=60) -> dict:
    def find():
        workers = plane.cli("worker", "list", "--pool", pool)
        return workers[0] if workers else None
    return wait_until(find, timeout, "the worker to register", interval=0.5)


def tags_of(worker) -> dict:
    tags = worker.get("tags") or {}
    if isinstance(tags, list):
        tags = dict(t.split("=", 1) if isinstance(t, str) else (t["key"], t["value"]) for t in tags)
    return tags


def submit(plane, pool: str, script: str) -> str:
    return plane.cli("run", "submit", "--pool", pool, "--", "sh", "-c", script)["id"]


def wait_run(plane, run_id: str, timeout=60) -> dict:
    ended = ("FINISHED", "FAILED", "STOPPED", "CANCELED", "DISCARDED")
    return wait_until(lambda: (r := plane.cli("run", "show", run_id))["state"] in ended and r, timeout,
                      f"run {run_id} to end", interval=0.5)


def logs(plane, run_id: str) -> str:
    return plane.cli("run", "logs", run_id, json_output=False)


# --- TLS and a proxy in front of the control plane ---------------------------------------------

def make_ca_and_cert(work) -> dict:
    """A private CA and a server certificate from it for 127.0.0.2, as a company CA would issue."""
    openssl = tool("openssl")
    ca_key, ca_pem = work / "ca.key", work / "ca.pem"
    run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_pem),
         "-days", "2", "-subj", "/CN=Gantry Test Private CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    key, csr, cert = work / "server.key", work / "server.csr", work / "server.pem"
    run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", "/CN=127.0.0.2"])
    ext = work / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.2\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run([openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)])
    bundle = work / "server-bundle.pem"
    bundle.write_text(cert.read_text() + key.read_text())
    return {"ca_pem": ca_pem.read_text(), "server_bundle": bundle}


class Daemon:
    def __init__(self, args, log):
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def port_open(host, port) -> bool:
    import socket
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def tls_front(tmp_path):
    """HTTPS on 127.0.0.2 with the private CA's certificate, forwarding to the control plane."""
    daemons = []

    def start(backend_port: int, port: int, bundle) -> None:
        daemon = Daemon([tool("socat"), f"OPENSSL-LISTEN:{port},bind=127.0.0.2,reuseaddr,fork,"
                         f"cert={bundle},verify=0", f"TCP:127.0.0.1:{backend_port}"], tmp_path / "socat.log")
        daemons.append(daemon)
        wait_until(lambda: port_open("127.0.0.2", port), 10, "the TLS front")

    yield start
    for d in daemons:
        d.stop()


@pytest.fixture
def squid():
    """A forward proxy, as a company's egress proxy; its access log shows what went through it."""
    binary = tool("squid")
    # squid writes its logs as its own unprivileged user, who cannot enter pytest's tmp_path.
    work = pathlib.Path(tempfile.mkdtemp(prefix="gantry-test-squid-"))
    os.chmod(work, 0o777)
    port = free_port()
    conf = work / "squid.conf"
    conf.write_text(f"""
http_port 127.0.0.1:{port}
http_access allow all
cache deny all
pid_filename {work}/squid.pid
access_log stdio:{work}/access.log
cache_log {work}/cache.log
coredump_dir {work}
shutdown_lifetime 0 seconds
""")
    daemon = Daemon([binary, "-N", "-f", str(conf)], work / "stderr.log")
    try:
        wait_until(lambda: daemon.proc.poll() is not None or port_open("127.0.0.1", port), 20, "squid")
        assert daemon.proc.poll() is None, (work / "cache.log").read_text()
        yield {"url": f"http://127.0.0.1:{port}", "access_log": work / "access.log"}
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)


# --- the tests ---------------------------------------------------------------------------------

def test_plain_deploy_boots_a_worker_that_runs(moto, aws_world, control_plane_factory, hosts,
                                                imds_factory, tmp_path):
    plane = control_plane_factory()
    pool = plane.create_pool("plain", tmp_path)
    create_secret(moto, "gantry/plain-credentials",
                  json.dumps({"GANTRY_TOKEN": pool["token"], "GANTRY_POOL_PRIVATE_KEY": pool["private_key"]}))
    stack = deploy(moto, aws_world, "gantry-ud-plain", {"SecretName": "gantry/plain-credentials"})
    imds = imds_factory(stack["instance_id"], stack["ami_id"])

    host = hosts()
    result = host.run_user_data(stack["user_data"], boot_env(moto, imds))
    assert result.returncode == 0, result.stdout + result.stderr
    for secret in (pool["token"], pool["private_key"]):
        assert secret not in result.stdout + result.stderr, "the user data printed a secret"

    worker = wait_worker(plane, "plain")
    tags = tags_of(worker)
    assert tags.get("instance_id") == stack["instance_id"]
    assert tags.get("ami_id") == stack["ami_id"]
    assert tags.get("asg_id") == stack["group"]

    run_id = submit(plane, "plain", "echo hello from $(id -un)")
    assert wait_run(plane, run_id)["state"] == "FINISHED"
    assert "hello from gantry" in logs(plane, run_id)
    assert imds.refused_without_token == 0, "something read the metadata service without IMDSv2"

    # A pool cycle drains the launcher, which exits 0: the instance powers off, for the group to
    # replace it with one that reads the configuration afresh.
    plane.cli("pool", "cycle", "plain", json_output=False)
    wait_until(lambda: not host.running(), 60, "the cycled instance to power off")


def test_every_option_and_a_drain_on_termination(moto, aws_world, control_plane_factory, hosts,
                                                 imds_factory, tls_front, squid, tmp_path):
    # The control plane is reachable only over HTTPS with a private CA, through the proxy.
    certs = make_ca_and_cert(tmp_path)
    tls_port = free_port("127.0.0.2")
    plane = control_plane_factory(public_url=f"https://127.0.0.2:{tls_port}")
    tls_front(plane.port, tls_port, certs["server_bundle"])
    pool = plane.create_pool("full", tmp_path)

    create_secret(moto, "gantry/full-credentials",
                  json.dumps({"GANTRY_TOKEN": pool["token"], "GANTRY_POOL_PRIVATE_KEY": pool["private_key"]}))
    ca_bundle = base64.b64encode(json.dumps(
        {"caCertificates": [base64.b64encode(certs["ca_pem"].encode()).decode()]}).encode()).decode()
    create_secret(moto, "gantry/ca-certificates", ca_bundle)
    create_secret(moto, "gantry/userdata", "\n".join([
        "# custom user data: runs before the launcher starts",
        "touch /var/tmp/custom-user-data-ran",
        "export GANTRY_EXECUTOR=process",
        "export GANTRY_METADATA_team=platform",
        "export GANTRY_LOG_FORMAT=text",
    ]))
    stack = deploy(moto, aws_world, "gantry-ud-full", {
        "SecretName": "gantry/full-credentials",
        "AdditionalRootCAsSecretName": "gantry/ca-certificates",
        "CustomUserDataSecretName": "gantry/userdata",
        "HttpProxyConfig": squid["url"],
        "HttpsProxyConfig": squid["url"],
        "NoProxyConfig": "some.domain,another.domain",
        "LauncherSha256": aws_world["launcher_sha256"],
    })
    imds = imds_factory(stack["instance_id"], stack["ami_id"])

    host = hosts()
    # TEST FAKE: a docker.service that only sleeps, and the docker group, as on an AMI with Docker;
    # the user data must hand the proxy to the daemon and put the launcher's user in the group.
    host.exec("sh", "-c", "printf '[Service]\\nExecStart=/bin/sleep infinity\\n' > /etc/systemd/system/docker.service"
              " && groupadd --system docker && systemctl daemon-reload && systemctl start docker")
    result = host.run_user_data(stack["user_data"], boot_env(moto, imds))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for secret in (pool["token"], pool["private_key"], ca_bundle):
        assert secret not in output, "the user data printed a secret"

    worker = wait_worker(plane, "full")
    tags = tags_of(worker)
    assert tags.get("instance_id") == stack["instance_id"] and tags.get("asg_id") == stack["group"]
    assert tags.get("team") == "platform", "the custom user data's exports must reach the launcher"

    # What the instance looks like after boot.
    assert host.exec("test", "-e", "/var/tmp/custom-user-data-ran", check=False).returncode == 0
    trust_store = host.exec("cat", "/etc/ssl/certs/ca-certificates.crt").stdout
    assert certs["ca_pem"].strip() in trust_store, "the CA must be in the system trust store"
    assert host.exec("stat", "-c", "%a %U", "/etc/gantry/launcher.env").stdout.split() == ["600", "root"]
    env_file = host.exec("cat", "/etc/gantry/launcher.env").stdout
    assert f'GANTRY_ADDITIONAL_ROOT_CAS="{ca_bundle}"' in env_file
    assert f'HTTPS_PROXY="{squid["url"]}"' in env_file
    assert "NO_PROXY=" in env_file and "some.domain,another.domain" in env_file
    docker_env = host.exec("systemctl", "show", "-p", "Environment", "--value", "docker").stdout
    assert f"HTTPS_PROXY={squid['url']}" in docker_env and f"http_proxy={squid['url']}" in docker_env
    assert "docker" in host.exec("id", "-nG", "gantry").stdout.split()
    pid = host.exec("systemctl", "show", "-p", "MainPID", "--value", "gantry-launcher").stdout.strip()
    assert host.exec("ps", "-o", "user=", "-p", pid).stdout.strip() == "gantry"
    launcher_sha = host.exec("sha256sum", "/usr/local/bin/gantry-launcher").stdout.split()[0]
    assert launcher_sha == aws_world["launcher_sha256"]

    # A run completes, its traffic went through the proxy and TLS with the private CA.
    run_id = submit(plane, "full", "echo hello from $(id -un)")
    assert wait_run(plane, run_id)["state"] == "FINISHED"
    assert "hello from gantry" in logs(plane, run_id)
    assert f"CONNECT 127.0.0.2:{tls_port}" in squid["access_log"].read_text()

    # Scale-in: with a run in flight, the group's target state becomes Terminated. The watcher
    # drains the launcher: the run finishes, then the launcher stops, and the instance stays up
    # for the lifecycle action to be completed.
    run_id = submit(plane, "full", f"sleep {DRAINED_RUN_SECONDS}; echo finished while draining")
    wait_until(lambda: plane.cli("run", "show", run_id)["state"] not in ("QUEUED", "READY"), 30,
               "the run to start", interval=0.3)
    imds.values["autoscaling/target-lifecycle-state"] = "Terminated"
    wait_until(lambda: host.unit_state("gantry-launcher") == "deactivating", 20, "the drain to begin")
    assert plane.cli("run", "show", run_id)["state"] != "FINISHED", "the run must be in flight while draining"
    assert wait_run(plane, run_id)["state"] == "FINISHED"
    assert "finished while draining" in logs(plane, run_id)
    wait_until(lambda: host.unit_state("gantry-launcher") in ("inactive", "failed"), 30,
               "the launcher to exit")
    assert host.unit_state("gantry-launcher") == "inactive", host.journal("gantry-launcher")
    watcher = wait_until(lambda: "gantry-launcher drained" in (j := host.journal("gantry-termination-watch")) and j,
                         20, "the watcher to see the drain")
    # moto has no CompleteLifecycleAction; the call is made all the same.
    assert "termination notice (Terminated)" in watcher
    time.sleep(1)
    assert host.running(), "a drain for termination must not power the instance off"
    assert imds.refused_without_token == 0, "something read the metadata service without IMDSv2"


def test_a_launcher_with_the_wrong_checksum_powers_off(moto, aws_world, control_plane_factory, hosts,
                                                       imds_factory, tmp_path):
    s3 = moto.client("s3")
    bucket = "gantry-test-tampered"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=bucket, Key="gantry-launcher", Body=b"#!/bin/sh\necho not the launcher\n")
    s3.put_object(Bucket=bucket, Key="gantry-launcher.sha256",
                  Body=f"{aws_world['launcher_sha256']}  gantry-launcher\n")
    create_secret(moto, "gantry/tampered-credentials",
                  json.dumps({"GANTRY_TOKEN": "dG9rZW4=", "GANTRY_POOL_PRIVATE_KEY": "a2V5"}))
    stack = deploy(moto, aws_world, "gantry-ud-tampered",
                   {"SecretName": "gantry/tampered-credentials", "BinariesBucket": bucket})
    imds = imds_factory(stack["instance_id"], stack["ami_id"])

    host = hosts()
    result = host.run_user_data(stack["user_data"], boot_env(moto, imds))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "FATAL: gantry-launcher has SHA-256" in output, output
    # Powered off, so that the group replaces it; no launcher was installed.
    wait_until(lambda: not host.running(), 30, "the instance to power off")
