"""The systemd unit for plain hosts: systemd-analyze verify, and its hardening measured."""

import re
import shutil

from conftest import UNIT, run, tool


def test_unit_verifies(tmp_path, gantry_bins):
    systemd_analyze = tool("systemd-analyze")
    # verify checks that ExecStart exists, so it runs against a root holding the launcher where the
    # unit expects it, plus the system's own units (the unit depends on network-online.target).
    root = tmp_path / "root"
    (root / "usr/local/bin").mkdir(parents=True)
    shutil.copy(gantry_bins[1], root / "usr/local/bin/gantry-launcher")
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/gantry-launcher.service")
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    result = run([systemd_analyze, "verify", f"--root={root}", "--man=no", "gantry-launcher.service"],
                 check=False)
    # Unknown or misspelt settings are only warnings to systemd: any output fails the test.
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr)


def test_unit_is_hardened():
    unit = UNIT.read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    for key in ["NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "RestrictSUIDSGID"]:
        assert settings[key] == "yes", key
    assert settings["ProtectSystem"] == "strict"
    assert settings["User"] == "gantry"
    assert settings["EnvironmentFile"] == "/etc/gantry/launcher.env"
    # Draining: the signal goes to the launcher only, and there is time for the runs to finish.
    assert settings["KillSignal"] == "SIGTERM"
    assert settings["KillMode"] == "mixed"
    assert settings["TimeoutStopSec"] == "80min"
    assert settings["RestartPreventExitStatus"] == "2 3 4"

    # systemd's own exposure score (0 = locked down, 10 = exposed); 1.7 when written.
    result = run([tool("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(UNIT)])
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout).group(1))
    assert score <= 2.0, result.stdout
