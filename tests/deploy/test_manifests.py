"""The deployment files against their schemas (Compose spec, Kubernetes, the CRDs), and what an operator relies
on: no dev key in production, consumers never scaled past their partitions, probes, limits and hardening."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from triggers_common.settings import DEV_API_KEY, Settings

from .conftest import OVERLAYS, ROOT

Rendered = dict[str, tuple[str, list[dict[str, Any]]]]
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
"""The oldest Kubernetes the manifests are meant for (matchLabelKeys, unhealthyPodEvictionPolicy) and the newest."""
CUSTOM_GROUPS = {"gateway.networking.k8s.io", "keda.sh", "monitoring.coreos.com"}
TARGETS = ("ingest", "inbox", "webhooks", "analytics")
STOP_WAIT_S = 10 + 15
"""uvicorn drains HTTP for up to 10 s, then a consumer waits up to 15 s for its batch (triggers_common.kafka)."""


def custom(obj: dict[str, Any]) -> bool:
    return obj["apiVersion"].split("/")[0] in CUSTOM_GROUPS


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_compose_file_is_valid(composecheck: Path) -> None:
    out = subprocess.run([str(composecheck), str(ROOT / "compose.yaml")], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_compose_runs_each_target_in_its_own_container() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    for target in TARGETS:
        assert services[target]["command"] == ["run", "--target", target]
    for name, service in services.items():
        image = service["image"]
        assert re.search(r":[^:/]+$", image) and not image.endswith(":latest"), f"{name}: {image}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_built_in_objects_match_the_kubernetes_schemas(rendered: Rendered, overlay: str, version: str) -> None:
    objects = [o for o in rendered[overlay][1] if not custom(o)]
    assert {"Deployment", "Service", "PodDisruptionBudget", "Job", "NetworkPolicy"} <= {o["kind"] for o in objects}
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_match_their_crd_schemas(
    rendered: Rendered, crd_schemas: Path, overlay: str, tmp_path: Path
) -> None:
    objects = [o for o in rendered[overlay][1] if custom(o)]
    assert {"HTTPRoute", "ScaledObject", "ServiceMonitor"} <= {o["kind"] for o in objects}
    (tmp_path / "objects.json").write_text(json.dumps(objects))
    out = subprocess.run(
        ["node", str(ROOT / "deploy" / "check" / "crds.mjs"), str(crd_schemas), str(tmp_path / "objects.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert f"{len(objects)} custom resources valid" in out.stdout


def test_prod_has_no_dev_key_no_dev_mode_and_no_literal_secret(rendered: Rendered) -> None:
    text, objects = rendered["prod"]
    assert DEV_API_KEY not in text
    assert not [o for o in objects if o["kind"] == "Secret"], "prod references the Secret `triggers`, never ships one"
    for config in by_kind(objects, "ConfigMap").values():
        assert config["data"].get("TRIGGERS_DEV_MODE", "false") == "false"
        assert "TRIGGERS_SECRET_KEY" not in config["data"] and "TRIGGERS_DATABASE_URL" not in config["data"]
    for workload in [*by_kind(objects, "Deployment").values(), *by_kind(objects, "Job").values()]:
        for container in containers(workload):
            for env in container.get("env", []):
                assert env["name"] != "TRIGGERS_DEV_MODE" or env.get("value") == "false"
                if env["name"] in {"TRIGGERS_SECRET_KEY", "TRIGGERS_DATABASE_URL"}:
                    assert "secretKeyRef" in env["valueFrom"], f"{workload['metadata']['name']}: {env['name']}"
    # ... and the dev overlay is the one that does run in dev mode, so the check above can tell them apart.
    dev_config = by_kind(rendered["dev"][1], "ConfigMap")["triggers"]["data"]
    assert dev_config["TRIGGERS_DEV_MODE"] == "true"


def consumer_groups(target: str) -> set[str]:
    """The consumer groups a target's code joins: ``f"{...consumer_group_prefix}-NAME"`` in its sources."""
    sources = (ROOT / "services" / target / "src").rglob("*.py")
    pattern = re.compile(r'f"\{[^}]*prefix\}-([a-z-]+)"')
    return {f"triggers-{name}" for path in sources for name in pattern.findall(path.read_text())}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_consumers_scale_on_the_lag_of_every_group_and_never_past_the_partitions(
    rendered: Rendered, overlay: str
) -> None:
    objects = rendered[overlay][1]
    settings = Settings(secret_key="x")
    partitions = {
        settings.events_topic: settings.events_partitions,
        settings.status_topic: settings.status_partitions,
    }
    prefix = by_kind(objects, "ConfigMap")["triggers"]["data"]["TRIGGERS_CONSUMER_GROUP_PREFIX"]
    scaled = by_kind(objects, "ScaledObject")
    assert set(scaled) == {f"triggers-{t}" for t in ("inbox", "webhooks", "analytics")}
    for name, obj in scaled.items():
        target = name.removeprefix("triggers-")
        lag = [t for t in obj["spec"]["triggers"] if t["type"] == "kafka"]
        groups = {t["metadata"]["consumerGroup"] for t in lag}
        assert groups == {g.replace("triggers-", f"{prefix}-", 1) for g in consumer_groups(target)}, name
        assert consumer_groups(target), f"no consumer group found in services/{target}"
        # Every replica holds a partition of its busiest topic (analytics' status group has fewer: its
        # extra members idle, the events group does not).
        assert obj["spec"]["maxReplicaCount"] <= max(partitions[t["metadata"]["topic"]] for t in lag), name
        assert obj["spec"]["minReplicaCount"] <= obj["spec"]["maxReplicaCount"]
        assert obj["spec"]["scaleTargetRef"]["name"] == name
        assert not [t for t in lag if t["metadata"].get("allowIdleConsumers") != "false"]
    # No HPA of our own on a Deployment that KEDA scales (KEDA owns that one); ingest scales on CPU.
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    assert set(hpas) == {"triggers-ingest"}
    assert hpas["triggers-ingest"]["spec"]["metrics"][0]["resource"]["name"] == "cpu"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_target_is_probed_limited_hardened_and_stops_gracefully(rendered: Rendered, overlay: str) -> None:
    objects = rendered[overlay][1]
    deployments = by_kind(objects, "Deployment")
    pdbs = by_kind(objects, "PodDisruptionBudget")
    for target in TARGETS:
        name = f"triggers-{target}"
        pod = deployments[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == ["run", "--target", target]
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert "memory" in container["resources"]["limits"]
        assert pod["terminationGracePeriodSeconds"] > STOP_WAIT_S + 5
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["topologySpreadConstraints"]
        assert name in pdbs
        tmp = {m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"}
        assert tmp and all("emptyDir" in v for v in pod["volumes"] if v["name"] in tmp)
    for workload in [*deployments.values(), *by_kind(objects, "Job").values()]:
        if workload["metadata"]["name"] in {"kafka", "postgres"}:  # the dev overlay's throwaway dependencies
            continue
        for container in containers(workload):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
    for workload in deployments.values():
        for container in containers(workload):
            image = container["image"]
            assert re.search(r":[^:/]+$", image) and not image.endswith(":latest"), image
