"""The chart on real platforms: SELinux label, the priority-class ResourceQuota, CRDs as
templates (upgrade path), the helm test, NOTES that print a policy that exists, and
helm lint over these values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from chart_render import CHART, ROOT, by_kind, container, one, render, run_helm, template_args

PLATFORM_VALUES: dict[str, dict[str, str]] = {
    "selinux": {"agent.seLinuxOptions.type": "spc_t", "agent.seLinuxOptions.level": "s0"},
    "quota": {"agent.priorityClassQuota.enabled": "true"},
    "crds-managed": {"crds.managed": "true"},
    "restriction-auto": {"agent.nodeRestriction.enabled": "auto"},
    "restriction-off": {"agent.nodeRestriction.enabled": "false"},
    "probes-off": {"agent.livenessProbe.enabled": "false", "agent.readinessProbe.enabled": "false",
                   "operator.livenessProbe.enabled": "false",
                   "operator.readinessProbe.enabled": "false"},
}


@pytest.mark.parametrize("name", sorted(PLATFORM_VALUES))
def test_helm_lint_strict_with_platform_values(helm: Path, name: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for key, value in PLATFORM_VALUES[name].items():
        args += ["--set", f"{key}={value}"]
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_selinux_options_reach_the_agent_only(helm: Path) -> None:
    docs = render(helm, PLATFORM_VALUES["selinux"])
    sc = container(one(docs, "DaemonSet"))["securityContext"]
    assert sc["seLinuxOptions"] == {"type": "spc_t", "level": "s0"}
    assert sc["capabilities"] == {"drop": ["ALL"]}           # the rest is kept
    assert "seLinuxOptions" not in container(one(docs, "Deployment"))["securityContext"]
    assert "seLinuxOptions" not in container(one(render(helm), "DaemonSet"))["securityContext"]


def test_priority_class_quota(helm: Path) -> None:
    assert not by_kind(render(helm), "ResourceQuota")
    quota = one(render(helm, PLATFORM_VALUES["quota"], namespace="ops"), "ResourceQuota")
    assert quota["metadata"]["namespace"] == "ops"
    assert quota["spec"]["scopeSelector"]["matchExpressions"] == [
        {"scopeName": "PriorityClass", "operator": "In", "values": ["system-node-critical"]}]
    assert quota["spec"]["hard"]["pods"] == "1000000"
    other = one(render(helm, {**PLATFORM_VALUES["quota"],
                              "agent.priorityClassName": "my-critical"}), "ResourceQuota")
    assert other["spec"]["scopeSelector"]["matchExpressions"][0]["values"] == ["my-critical"]
    # no priority class: nothing to admit
    assert not by_kind(render(helm, {**PLATFORM_VALUES["quota"], "agent.priorityClassName": ""}),
                       "ResourceQuota")


def test_managed_crds_are_the_crds_dir_kept_on_uninstall(helm: Path) -> None:
    assert not by_kind(render(helm), "CustomResourceDefinition")   # crds/ only, by default
    crds = by_kind(render(helm, PLATFORM_VALUES["crds-managed"]), "CustomResourceDefinition")
    source = {d["metadata"]["name"]: d for p in sorted((ROOT / "crds").glob("*.yaml"))
              for d in yaml.safe_load_all(p.read_text()) if d}
    assert {c["metadata"]["name"] for c in crds} == set(source)
    for crd in crds:
        name = crd["metadata"]["name"]
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert crd["spec"] == source[name]["spec"], name


def test_helm_test_pod_asks_the_operator_and_an_agent(helm: Path) -> None:
    docs = render(helm, namespace="ops")
    (pod,) = [d for d in by_kind(docs, "Pod")
              if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    script = pod["spec"]["containers"][0]["args"][0]
    compile(script, "helm-test", "exec")                       # valid Python
    svc = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    operator_svc = svc["hr-headroom-operator"]
    assert f"http://hr-headroom-operator.ops.svc:{operator_svc['spec']['ports'][0]['port']}" \
        in script and "/readyz" in script
    assert operator_svc["spec"]["ports"][0]["targetPort"] == "health"
    assert "hr-headroom-agent-metrics.ops.svc:9808/metrics" in script
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    off = render(helm, {"metrics.enabled": "false"})
    script_off = one([d for d in off if d["kind"] == "Pod"], "Pod")["spec"]["containers"][0][
        "args"][0]
    assert "/metrics" not in script_off


def test_notes_print_the_example_the_chart_ships(helm: Path, tmp_path: Path) -> None:
    shipped = CHART / "examples" / "policy-dry-run.yaml"
    assert shipped.read_bytes() == (ROOT / "examples" / "policy-dry-run.yaml").read_bytes(), (
        "refresh the chart's copy: cp examples/policy-dry-run.yaml charts/headroom/examples/")
    proc = run_helm(helm, "install", "hr", str(CHART), "--namespace", "ops", "--dry-run=client")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    heredoc = notes.split("kubectl apply -f - <<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0]
    assert yaml.safe_load(heredoc) == yaml.safe_load(shipped.read_text())
    assert "examples/<policy>" not in notes
    assert "helm test hr -n ops" in notes


@pytest.mark.parametrize(("values", "needle"), [
    ({"agent.seLinuxOptions.kind": "x"}, "seLinuxOptions"),
    ({"agent.nodeRestriction.enabled": "sometimes"}, "enabled"),
    ({"agent.priorityClassQuota.pods": "lots"}, "pods"),
    ({"operator.livenessProbe.port": "8080"}, "additional properties"),
])
def test_schema_rejects_bad_platform_values(helm: Path, values: dict[str, str],
                                            needle: str) -> None:
    proc = run_helm(helm, *template_args(values))
    assert proc.returncode != 0 and needle in proc.stderr, proc.stderr


def test_monitors_honor_labels_and_scrape_agent_and_operator(helm: Path) -> None:
    docs = render(helm, {"metrics.serviceMonitor.enabled": "true",
                         "metrics.podMonitor.enabled": "true"})
    sm = one(docs, "ServiceMonitor")
    assert [e["honorLabels"] for e in sm["spec"]["endpoints"]] == [True]
    selected = [s for s in by_kind(docs, "Service")
                if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert sorted(s["metadata"]["name"] for s in selected) == [
        "hr-headroom-agent-metrics", "hr-headroom-operator"]
    for s in selected:
        assert "metrics" in [p["name"] for p in s["spec"]["ports"]]
    operator = container(one(docs, "Deployment"))
    assert "metrics" in [p["name"] for p in operator["ports"]]
    assert {e["name"]: e.get("value") for e in operator["env"]}["HEADROOM_METRICS_PORT"] == "9808"
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True
    components = pm["spec"]["selector"]["matchExpressions"][2]["values"]
    assert components == ["agent", "operator"]
    off = render(helm, {"metrics.enabled": "false"})
    assert "metrics" not in [p["name"] for p in container(one(off, "Deployment"))["ports"]]


def test_dashboard_configmap_carries_the_shipped_json(helm: Path) -> None:
    assert not by_kind(render(helm), "ConfigMap")
    cm = one(render(helm, {"metrics.dashboard.enabled": "true"}), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (CHART / "dashboards" / "headroom.json").read_text()
    assert json.loads(cm["data"]["headroom.json"]) == json.loads(shipped)
