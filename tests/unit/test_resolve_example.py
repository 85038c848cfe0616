"""The worked example of docs/api.md, checked against resolve()."""

from __future__ import annotations

import pathlib
from typing import Any

import yaml
from headroom.controller.resolve import CLUSTER_KIND, NAMESPACED_KIND, PolicyRef, resolve

ROOT = pathlib.Path(__file__).resolve().parents[2]


def pod(name: str, node: str, app: str, request: str, limit: str | None) -> dict[str, Any]:
    res: dict[str, Any] = {"requests": {"memory": request, "cpu": "100m"}}
    if limit:
        res["limits"] = {"memory": limit}
    return {"metadata": {"name": name, "namespace": "default", "uid": f"0b1e-{name}",
                         "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{"name": "app", "resources": res}]},
            "status": {"phase": "Running"}}


def test_worked_example_of_the_api_doc() -> None:
    web = yaml.safe_load((ROOT / "examples/policy-limit-percent.yaml").read_text())
    qos = yaml.safe_load((ROOT / "examples/cluster-policy-throttling-percent.yaml").read_text())
    pods = [pod("web-0", "node-a", "web", "512Mi", "1Gi"),
            pod("web-1", "node-b", "web", "512Mi", None),
            pod("api-0", "node-b", "api", "256Mi", "512Mi")]
    ns = [{"metadata": {"name": "default", "labels": {"headroom.dev/enabled": "true"}}}]
    res = resolve([web], [qos], pods, ns)
    doc = (ROOT / "docs/api.md").read_text()
    plans = list(yaml.safe_load_all(doc.split("The operator writes:")[1]
                                    .split("```yaml")[1].split("```")[0]))
    assert {p["metadata"]["name"]: p["spec"] for p in plans} == res.plans
    report = res.policies[PolicyRef(NAMESPACED_KIND, "default", "web")]
    assert (report.matched_pods, report.planned_pods) == (2, 1)
    assert [(s.pod.name, s.reason) for s in report.skipped] == [("web-1", "NoMemoryLimit")]
    assert res.policies[PolicyRef(CLUSTER_KIND, "", "default-qos")].planned_pods == 1
