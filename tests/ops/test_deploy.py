"""The container recipe and the Kubernetes manifests, checked against the schemas and the CLI's real flags.

No Docker daemon or cluster runs here: the manifests are validated against Kubernetes' own
OpenAPI schemas (strict: unknown fields fail), and every flag, port, probe and hook is
checked against `avatar-node`'s real argument parser and the node's real health service.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from avatar_node import __version__
from avatar_node.cli import TOKEN_ENV, build_parser
from avatar_node.rpc.service import SERVICE_NAME

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kubernetes" / "avatar-node.yaml"
DOCKERFILE = ROOT / "Dockerfile"
#: The oldest Kubernetes whose schemas kubernetes-validate ships (gRPC probes: 1.24+), and a recent one.
KUBERNETES_VERSIONS = ("1.25.0", "1.33.0")


@pytest.fixture(scope="module")
def documents() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


@pytest.fixture(scope="module")
def container(documents) -> dict:
    (only,) = documents["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def serve_args(args: list[str]):
    return build_parser().parse_args(["serve", *args])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_pass_the_kubernetes_schemas(documents, version):
    import kubernetes_validate

    assert set(documents) == {"Deployment", "Service"}
    for doc in documents.values():
        kubernetes_validate.validate(doc, version, strict=True)


def test_deployment_runs_the_node_with_real_flags(documents, container):
    args = serve_args(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args.host == "0.0.0.0"
    assert ports == {"grpc": args.port, "metrics": args.metrics_port}
    annotations = documents["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == args.metrics_port
    assert annotations["prometheus.io/path"] == "/metrics"
    assert [e["name"] for e in container["env"]] == [TOKEN_ENV]
    assert container["image"].endswith(f":{__version__}")


def test_probes_liveness_on_overall_health_readiness_on_the_service(container):
    port = serve_args(container["args"]).port
    live, ready, start = container["livenessProbe"], container["readinessProbe"], container["startupProbe"]
    assert live["grpc"]["port"] == ready["grpc"]["port"] == start["grpc"]["port"] == port
    assert live["grpc"].get("service", "") == ""  # the process, never readiness: a full node is alive
    assert start["grpc"].get("service", "") == ""
    assert ready["grpc"]["service"] == SERVICE_NAME


def test_termination_leaves_time_for_prestop_and_the_drain(documents, container):
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = float(command[1])
    grace_s = serve_args(container["args"]).grace
    closing_s = 2.0 + 1.0 + 5.0  # drain's close wait, the server's stop, and a margin
    assert pre_stop_s + grace_s + closing_s <= pod["terminationGracePeriodSeconds"]
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_service_reaches_the_named_ports(documents, container):
    service = documents["Service"]["spec"]
    pod_labels = documents["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["ports"]} == names


def _instruction(name: str) -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", text, flags=re.M)]


def _exec_form(text: str) -> list[str]:
    return json.loads(text)


def test_dockerfile_runs_the_node_as_a_user_with_real_flags():
    (entrypoint,) = _instruction("ENTRYPOINT")
    (cmd,) = _instruction("CMD")
    assert _exec_form(entrypoint) == ["avatar-node", "serve"]  # exec form: SIGTERM reaches the node
    args = serve_args(_exec_form(cmd))
    (expose,) = _instruction("EXPOSE")
    assert sorted(int(p) for p in expose.split()) == sorted([args.port, args.metrics_port])
    (user,) = _instruction("USER")
    assert not user.startswith(("0", "root"))
    assert _instruction("STOPSIGNAL") == ["SIGTERM"]
    for source in re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), flags=re.M):
        assert (ROOT / source).exists(), source
    install = " ".join(_instruction("RUN"))
    assert "pip wheel" in install and "pip install" in install and "--no-deps" not in install


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_container_command_serves_passes_its_healthcheck_and_drains_on_sigterm(tmp_path):
    """The image's command line as it is, on free ports: the HEALTHCHECK passes, SIGTERM drains."""
    (cmd,) = _instruction("CMD")
    grpc_port, metrics_port = _free_port(), _free_port()
    args = _exec_form(cmd)
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(grpc_port)
    args[args.index("--metrics-port") + 1] = str(metrics_port)
    (entrypoint,) = _instruction("ENTRYPOINT")
    command = [sys.executable, "-m", "avatar_node.cli", *_exec_form(entrypoint)[1:], *args]
    node = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
    try:
        assert node.stdout is not None
        assert "ready on" in node.stdout.readline()
        (health,) = _instruction("HEALTHCHECK")
        check = _exec_form(health.split("CMD", 1)[1].strip())
        assert check[:2] == ["avatar-node", "health"]
        check[check.index("--target") + 1] = f"127.0.0.1:{grpc_port}"
        probe = subprocess.run([sys.executable, "-m", "avatar_node.cli", *check[1:]], capture_output=True,
                               text=True, timeout=60)
        assert probe.returncode == 0 and "SERVING" in probe.stdout, probe.stderr
        node.send_signal(signal.SIGTERM)
        began = time.monotonic()
        assert node.wait(timeout=60) == 0
        assert time.monotonic() - began < 30
        assert "draining" in node.stdout.read()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()


def test_readiness_probe_target_reports_not_serving_when_full():
    """What the readiness probe asks for: the service's health follows capacity."""
    from avatar_node.cli import main as node_main
    from avatar_node.server import NodeConfig, start_background_node

    with start_background_node(NodeConfig(port=0, max_sessions=1)) as node:
        assert node_main(["health", "--target", node.target, "--service", SERVICE_NAME]) == 0
        assert node_main(["health", "--target", node.target, "--service", "no.such.Service"]) == 1


def test_cgroup_cpu_limit_caps_the_cores(tmp_path):
    from avatar_node.pipeline.threads import cgroup_cpu_limit

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(str(tmp_path)) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(str(tmp_path)) is None
    os.remove(tmp_path / "cpu.max")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_limit(str(tmp_path)) == 2.0
