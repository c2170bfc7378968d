"""The Helm chart: rendered and linted by Helm's own engine (helm-python-sdk), every manifest
validated strictly against the Kubernetes schemas, for the defaults and for each option."""

import base64
import json
import subprocess
import urllib.parse
import urllib.request

import jsonschema
import pytest
import yaml

from conftest import CHART, ROOT, free_port, require, run, tool, wait_until

try:
    import helm_python as helm
except ImportError:  # pragma: no cover - reported by the require() below
    helm = None

# The oldest Kubernetes the chart supports (native sidecars) and the newest schema at hand.
KUBE_VERSIONS = ["1.29.0", "1.37.0"]
CA_BUNDLE = base64.b64encode(json.dumps({"caCertificates": [
    base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()]}).encode()).decode()

OPTIONS = {
    "defaults": {},
    "credentials": {"credentials": {"token": "dG9rZW4=", "privateKey": "a2V5"}},
    "existing-secret": {"credentials": {"existingSecret": "gantry-pool-default"}},
    "self-hosted-image": {"launcher": {"image": {
        "repository": "012345678901.dkr.ecr.eu-west-2.amazonaws.com/gantry-launcher", "tag": "0.1.0"}}},
    "proxy": {"proxy": {"http": "http://proxy.example.com:1234", "https": "https://proxy.example.com:4321",
                        "noProxy": "some.domain,another.domain"}},
    "ca-bundle": {"additionalRootCAs": CA_BUNDLE},
    "replicas-and-resources": {
        "replicaCount": 3,
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
        "docker": {"dind": {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}}},
    "host-docker-socket": {"docker": {"mode": "hostSocket", "hostSocket": {"groupId": 998}}},
    "no-docker": {"docker": {"mode": "none"}},
    "launcher-settings": {"launcher": {"maxConcurrentRuns": 4, "defaultRunnerImage": "runner:1",
                                       "metadata": {"team": "platform"},
                                       "extraEnv": [{"name": "GANTRY_RUN_TIMEOUT", "value": "2h"}]},
                          "terminationGracePeriodSeconds": 9000},
    "keda": {"keda": {"enabled": True, "serverAddress": "http://prometheus-server.monitoring.svc:9090",
                      "poolName": "linux", "maxReplicaCount": 20, "authenticationRef": "prometheus-auth"}},
    "scheduling": {"nodeSelector": {"kubernetes.io/os": "linux"},
                   "tolerations": [{"key": "gantry", "operator": "Exists", "effect": "NoSchedule"}],
                   "imagePullSecrets": [{"name": "ecr"}], "podAnnotations": {"a": "b"}},
}


KEDA_SCHEMA = json.loads((ROOT / "tests" / "deploy" / "schemas" / "keda-scaledobject.schema.json").read_text())


@pytest.fixture(scope="module")
def chart():
    require(helm, "helm-python-sdk")
    return helm.Chart.load(CHART)


def render(chart, values) -> list[dict]:
    out = chart.render(values, name="default", namespace="gantry")
    docs = []
    for path, text in out.items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("option", OPTIONS)
def test_renders_lints_and_validates(chart, option, tmp_path):
    values = OPTIONS[option]
    docs = render(chart, values)
    assert docs

    report = helm.lint(CHART, values, strict=True, namespace="gantry")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems

    # kubernetes-validate has no schema for KEDA's custom resource (it only warns): that one is
    # validated against tests/deploy/schemas/, as strictly.
    for scaled in by_kind(docs, "ScaledObject"):
        jsonschema.validate(scaled, KEDA_SCHEMA)
    docs = [d for d in docs if d["kind"] != "ScaledObject"]
    manifests = tmp_path / "manifests.yaml"
    manifests.write_text(yaml.safe_dump_all(docs))
    validate = tool("kubernetes-validate")
    for version in KUBE_VERSIONS:
        result = run([validate, "--strict", "-k", version, str(manifests)], check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def launcher_and_env(docs):
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    launcher = next(c for c in pod["containers"] if c["name"] == "launcher")
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in launcher["env"]}
    return pod, launcher, env


def test_defaults(chart):
    docs = render(chart, {})
    pod, launcher, env = launcher_and_env(docs)
    # The tag defaults to the chart's appVersion, the Gantry version it ships with.
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert launcher["image"] == f"gantry-launcher:{app_version}"
    assert by_kind(docs, "Deployment")[0]["spec"]["replicas"] == 1
    # Credentials from the chart's Secret, all of its keys.
    secret = by_kind(docs, "Secret")[0]
    assert set(secret["stringData"]) == {"GANTRY_TOKEN", "GANTRY_POOL_PRIVATE_KEY"}
    assert launcher["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    # Docker for runs from a dind native sidecar sharing the socket and the work directory.
    dind = pod["initContainers"][0]
    assert dind["restartPolicy"] == "Always" and dind["securityContext"]["privileged"] is True
    assert env["GANTRY_EXECUTOR"] == "docker"
    assert env["DOCKER_HOST"] == "unix:///var/run/dind/docker.sock"
    work = {m["name"]: m["mountPath"] for m in launcher["volumeMounts"]}["work"]
    assert {m["name"]: m["mountPath"] for m in dind["volumeMounts"]}["work"] == work == env["GANTRY_WORK_DIR"]
    assert "preStop" in dind["lifecycle"]
    # Draining: a long grace period; the launcher itself is unprivileged.
    assert pod["terminationGracePeriodSeconds"] >= 4200
    assert launcher["securityContext"]["allowPrivilegeEscalation"] is False
    assert launcher["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False


def test_options_reach_the_launcher(chart):
    _, launcher, _ = launcher_and_env(render(chart, OPTIONS["self-hosted-image"]))
    assert launcher["image"] == "012345678901.dkr.ecr.eu-west-2.amazonaws.com/gantry-launcher:0.1.0"

    docs = render(chart, OPTIONS["existing-secret"])
    assert not by_kind(docs, "Secret")
    _, launcher, _ = launcher_and_env(docs)
    assert launcher["envFrom"] == [{"secretRef": {"name": "gantry-pool-default"}}]

    docs = render(chart, OPTIONS["proxy"])
    pod, _, env = launcher_and_env(docs)
    dind_env = {e["name"]: e["value"] for e in pod["initContainers"][0]["env"]}
    for name, value in [("HTTP_PROXY", "http://proxy.example.com:1234"),
                        ("HTTPS_PROXY", "https://proxy.example.com:4321"),
                        ("NO_PROXY", "some.domain,another.domain")]:
        assert env[name] == env[name.lower()] == dind_env[name] == value

    _, _, env = launcher_and_env(render(chart, OPTIONS["ca-bundle"]))
    assert env["GANTRY_ADDITIONAL_ROOT_CAS"] == CA_BUNDLE

    docs = render(chart, OPTIONS["replicas-and-resources"])
    _, launcher, _ = launcher_and_env(docs)
    assert by_kind(docs, "Deployment")[0]["spec"]["replicas"] == 3
    assert launcher["resources"]["limits"]["memory"] == "2Gi"

    pod, launcher, env = launcher_and_env(render(chart, OPTIONS["host-docker-socket"]))
    assert "initContainers" not in pod
    assert env["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    assert pod["securityContext"]["supplementalGroups"] == [998]
    assert {"name": "docker-socket", "hostPath": {"path": "/var/run/docker.sock", "type": "Socket"}} in pod["volumes"]

    pod, _, env = launcher_and_env(render(chart, OPTIONS["no-docker"]))
    assert "initContainers" not in pod and "DOCKER_HOST" not in env
    assert env["GANTRY_EXECUTOR"] == "process"

    _, _, env = launcher_and_env(render(chart, OPTIONS["launcher-settings"]))
    assert env["GANTRY_MAX_CONCURRENT_RUNS"] == "4"
    assert env["GANTRY_METADATA_team"] == "platform"
    assert env["GANTRY_RUN_TIMEOUT"] == "2h"


def test_keda_is_off_by_default_and_scales_the_deployment_on_demand(chart):
    docs = render(chart, {})
    assert not by_kind(docs, "ScaledObject")

    docs = render(chart, OPTIONS["keda"])
    deployment = by_kind(docs, "Deployment")[0]
    # KEDA owns the replica count: the chart must not reset it on each upgrade.
    assert "replicas" not in deployment["spec"]
    scaled = by_kind(docs, "ScaledObject")[0]
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": deployment["metadata"]["name"]}
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (0, 20)
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert trigger["authenticationRef"] == {"name": "prometheus-auth"}
    meta = trigger["metadata"]
    assert meta["serverAddress"] == "http://prometheus-server.monitoring.svc:9090"
    assert meta["query"] == ('sum(gantry_worker_pool_runs_pending{worker_pool_name="linux"}) + '
                             'sum(gantry_worker_pool_workers_busy{worker_pool_name="linux"})')
    assert meta["threshold"] == "1"
    # Scaling in drains: the grace period still covers the longest run.
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 4200


def test_keda_query_reads_pending_runs_and_busy_workers_on_a_real_prometheus(chart, control_plane_factory,
                                                                            tmp_path):
    """The ScaledObject's query, as rendered, run by a real Prometheus scraping a real control plane."""
    prometheus = tool("prometheus")
    plane = control_plane_factory()
    plane.create_pool("linux", tmp_path)
    for _ in range(2):  # no launcher: both stay pending
        plane.cli("run", "submit", "--pool", "linux", "--", "true")
    query = by_kind(render(chart, OPTIONS["keda"]), "ScaledObject")[0]["spec"]["triggers"][0]["metadata"]["query"]

    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{
            "job_name": "gantry", "metrics_path": "/metrics",
            "authorization": {"credentials": plane.ADMIN_TOKEN},
            "static_configs": [{"targets": [f"127.0.0.1:{plane.port}"]}],
        }],
    }))
    log = tmp_path / "prometheus.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        def value():
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    result = json.load(response)["data"]["result"]
            except OSError:
                return None
            return result[0]["value"][1] if result else None
        assert wait_until(lambda: proc.poll() is not None or value(), 60, "the query's first value"), log.read_text()
        assert value() == "2", log.read_text()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("values", [
    {"keda": {"enabled": True, "poolName": "linux"}},  # no Prometheus server
    {"keda": {"enabled": True, "serverAddress": "http://p:9090"}},  # no pool
    {"keda": {"enabled": True, "serverAddress": "http://p:9090", "poolName": "x",
              "minReplicaCount": 5, "maxReplicaCount": 2}},
    {"keda": {"enabled": True, "serverAddress": "http://p:9090", "poolName": "x", "threshold": 1}},
    {"keda": {"enable": True}},  # a typo of enabled
])
def test_keda_refuses_incomplete_values(chart, values):
    with pytest.raises(helm.HelmError):
        render(chart, values)


@pytest.mark.parametrize("values", [
    {"docker": {"mode": "podman"}},
    {"replicas": 2},  # a typo of replicaCount
    {"launcher": {"image": {"tag": 1.0}}},  # a number where YAML users meant a string
])
def test_rejects_invalid_values(chart, values):
    # values.schema.json catches these before anything renders.
    with pytest.raises(helm.HelmError):
        render(chart, values)
