"""scripts/release.sh: the archive's layout and checksums, and the launcher image it can build.

It packages the debug build that scripts/test-all.sh has just made (GANTRY_RELEASE_PROFILE=dev,
GANTRY_RELEASE_NO_BUILD=1): the layout and the checks are those of a release, without its long
compile, and without a `cargo build --bin` whose feature set would differ from the workspace
build's and rebuild half of it."""

import hashlib
import os
import re
import tarfile
import urllib.request

import pytest
import yaml

from conftest import CHART, ROOT, TEMPLATE, UNIT, ControlPlane, run, tool, wait_until

IMAGE_NAME = "gantry-test-launcher"


def workspace_version() -> str:
    text = (ROOT / "Cargo.toml").read_text()
    return re.search(r'\[workspace\.package\][^\[]*?^version = "([^"]+)"', text, re.M | re.S).group(1)


@pytest.fixture(scope="module")
def release(tmp_path_factory, gantry_bins):
    dist = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, GANTRY_RELEASE_PROFILE="dev", GANTRY_RELEASE_NO_BUILD="1", DIST_DIR=str(dist),
               GANTRY_IMAGE_NAME=IMAGE_NAME)
    tool("docker")
    run([str(ROOT / "scripts" / "release.sh"), "--image"], env=env, cwd=ROOT, timeout=1800)
    version = workspace_version()
    yield {"archive": dist / f"gantry-{version}-linux-x86_64.tar.gz", "version": version}
    run(["docker", "rmi", f"{IMAGE_NAME}:{version}"], check=False)


def test_archive_layout_and_checksums(release, tmp_path):
    archive = release["archive"]
    assert archive.exists()
    assert (archive.parent / (archive.name + ".sha256")).read_text().split()[0] == \
        hashlib.sha256(archive.read_bytes()).hexdigest()
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path, filter="data")
    for path in ["SHA256SUMS", "bin/gantry", "bin/gantry-launcher", "bin/gantry-launcher.sha256",
                 "cloudformation/workerpool.yaml", "helm/gantry-workerpool/Chart.yaml",
                 "helm/gantry-workerpool/values.yaml", "systemd/gantry-launcher.service",
                 "docs/deploying-worker-pools.md"]:
        assert path in names, path
    # Every file is covered by SHA256SUMS, and it checks.
    files = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    sums = (tmp_path / "SHA256SUMS").read_text().splitlines()
    assert {line.split(None, 1)[1] for line in sums} == files
    run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=tmp_path)
    # The bucket's checksum file is as the user data expects it.
    launcher = (tmp_path / "bin/gantry-launcher").read_bytes()
    assert (tmp_path / "bin/gantry-launcher.sha256").read_text() == \
        f"{hashlib.sha256(launcher).hexdigest()}  gantry-launcher\n"
    # The versions agree: binaries, chart.
    version = release["version"]
    for binary in ("gantry", "gantry-launcher"):
        out = run([str(tmp_path / "bin" / binary), "--version"]).stdout
        assert out.split()[-1] == version, out
    # The packaged server serves the packaged launcher, the one beside it.
    data = tmp_path / "data"
    data.mkdir()
    plane = ControlPlane(tmp_path / "bin" / "gantry", data)
    try:
        with urllib.request.urlopen(f"{plane.url}/api/v1/launcher/download", timeout=30) as response:
            assert hashlib.sha256(response.read()).hexdigest() == hashlib.sha256(launcher).hexdigest()
    finally:
        plane.stop()
    chart = yaml.safe_load((tmp_path / "helm/gantry-workerpool/Chart.yaml").read_text())
    assert chart["appVersion"] == version
    assert (tmp_path / "cloudformation/workerpool.yaml").read_text() == TEMPLATE.read_text()
    assert (tmp_path / "systemd/gantry-launcher.service").read_text() == UNIT.read_text()
    assert (tmp_path / "helm/gantry-workerpool/values.yaml").read_text() == (CHART / "values.yaml").read_text()


def test_launcher_image_registers_and_drains(release, control_plane_factory, tmp_path):
    """The FROM-scratch launcher image runs as non-root, joins a pool, and drains on docker stop."""
    image = f"{IMAGE_NAME}:{release['version']}"
    assert run(["docker", "run", "--rm", image, "--version"]).stdout.split()[-1] == release["version"]
    user = run(["docker", "image", "inspect", "-f", "{{.Config.User}}", image]).stdout.strip()
    assert user and not user.startswith("0")

    plane = control_plane_factory()
    pool = plane.create_pool("image", tmp_path)
    name = f"gantry-test-launcher-{os.getpid()}"
    run(["docker", "run", "-d", "--name", name, "--network", "host", "--read-only",
         "--tmpfs", "/var/lib/gantry-launcher:uid=10001,gid=10001", "--tmpfs", "/tmp",
         "-e", f"GANTRY_TOKEN={pool['token']}", "-e", f"GANTRY_POOL_PRIVATE_KEY={pool['private_key']}",
         "-e", "GANTRY_EXECUTOR=process", "-e", "GANTRY_METADATA_source=image", image])
    try:
        wait_until(lambda: [w for w in plane.cli("worker", "list")
                            if (w.get("tags") or {}).get("source") == "image"], 30, "the image's launcher")
        run(["docker", "stop", "-t", "30", name])
        code = run(["docker", "inspect", "-f", "{{.State.ExitCode}}", name]).stdout.strip()
        assert code == "0", run(["docker", "logs", name], check=False).stderr
    finally:
        run(["docker", "rm", "-f", name], check=False)


def test_scripts_pass_shellcheck():
    scripts = [ROOT / "scripts" / "release.sh", ROOT / "tests" / "deploy" / "image" / "build.sh"]
    result = run([tool("shellcheck"), *map(str, scripts)], check=False)
    assert result.returncode == 0, result.stdout
