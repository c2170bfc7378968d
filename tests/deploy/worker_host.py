"""A stand-in for an EC2 worker instance, to run the CloudFormation user data for real.

The "instance" is a Docker container booting systemd from the image that image/build.sh makes
(an AMI's contents: systemd, bash, curl, python3, the AWS CLI). The user data, taken from the
launch template that moto holds, runs in it as cloud-init would: as root, with systemd up. AWS is
moto on the host (AWS_ENDPOINT_URL), the metadata service is fakes/imds.py (its endpoint named by
AWS_EC2_METADATA_SERVICE_ENDPOINT, which the AWS CLI honours too). --network host lets the
container reach both, and the Gantry control plane, on the host's loopback.
"""

import hashlib
import pathlib
import subprocess
import uuid

from conftest import ROOT, require, run, tool, wait_until

BUILD_SCRIPT = pathlib.Path(__file__).parent / "image" / "build.sh"


def awscli_version() -> str:
    for line in (ROOT / "requirements-test.txt").read_text().splitlines():
        if line.startswith("awscli=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError("requirements-test.txt pins no awscli")


def image() -> str:
    """The worker image, built once and then reused by its tag (a hash of how it is built)."""
    docker = tool("docker")
    version = awscli_version()
    digest = hashlib.sha256(BUILD_SCRIPT.read_bytes() + version.encode()).hexdigest()[:12]
    tag = f"gantry-test-userdata:{digest}"
    if run([docker, "image", "inspect", tag], check=False).returncode != 0:
        tool("debootstrap")
        run(["bash", str(BUILD_SCRIPT), tag, version, tool("pip")], timeout=1200)
    return tag


class WorkerHost:
    def __init__(self, image_tag: str):
        self.docker = tool("docker")
        self.name = f"gantry-test-worker-{uuid.uuid4().hex[:8]}"
        # systemd needs to manage cgroups and mounts (the unit's sandboxing too), hence SYS_ADMIN
        # and no seccomp/AppArmor filter; full --privileged is not needed.
        run([self.docker, "run", "-d", "--name", self.name, "--network", "host",
             "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
             "--security-opt", "apparmor=unconfined", "--stop-signal", "SIGRTMIN+3",
             "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
             "-v", "/sys/fs/cgroup:/sys/fs/cgroup", image_tag])
        wait_until(lambda: self.system_state() in ("running", "degraded", "gone"), 60, "systemd to boot")
        require(self.system_state() != "gone", "a container that boots systemd")

    def system_state(self) -> str:
        if not self.running():
            return "gone"
        return self.exec("systemctl", "is-system-running", check=False).stdout.strip()

    def running(self) -> bool:
        out = run([self.docker, "inspect", "-f", "{{.State.Running}}", self.name], check=False).stdout
        return out.strip() == "true"

    def exec(self, *args: str, env: dict | None = None, check=True, timeout=120) -> subprocess.CompletedProcess:
        flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
        return run([self.docker, "exec", *flags, self.name, *args], check=check, timeout=timeout)

    def run_user_data(self, user_data: str, env: dict) -> subprocess.CompletedProcess:
        """Runs the user data as cloud-init does (root, bash, systemd up); returns the result."""
        path = "/var/lib/cloud/instance/user-data.txt"
        self.exec("mkdir", "-p", "/var/lib/cloud/instance")
        subprocess.run([self.docker, "exec", "-i", self.name, "sh", "-c", f"cat > {path}"],
                       input=user_data, text=True, check=True)
        return self.exec("bash", path, env=env, check=False, timeout=300)

    def unit_state(self, unit: str) -> str:
        return self.exec("systemctl", "show", "-p", "ActiveState", "--value", unit).stdout.strip()

    def journal(self, unit: str) -> str:
        return self.exec("journalctl", "--no-pager", "-o", "cat", "-u", unit, check=False).stdout

    def remove(self) -> None:
        run([self.docker, "rm", "-f", self.name], check=False)
