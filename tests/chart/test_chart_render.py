"""The chart rendered by a real helm: lint, value sets, schema rejections, what
the manifests must say (node agent wiring, least privilege, metrics plumbing)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from chart_render import CHART, by_kind, container, env_of, one, render, run_helm, template_args

LINT_VALUE_SETS: dict[str, dict[str, str]] = {
    "defaults": {},
    "metrics-off": {"metrics.enabled": "false"},
    "servicemonitor-on": {"metrics.serviceMonitor.enabled": "true"},
    "monitoring-on": {"metrics.podMonitor.enabled": "true",
                      "metrics.prometheusRule.enabled": "true",
                      "metrics.dashboard.enabled": "true"},
    "custom-image": {"image.repository": "registry.example/headroom", "image.tag": "1.2.3"},
}


@pytest.mark.parametrize("name", sorted(LINT_VALUE_SETS))
def test_helm_lint_strict(helm: Path, name: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for key, value in LINT_VALUE_SETS[name].items():
        args += ["--set", f"{key}={value}"]
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_defaults_render_every_component(helm: Path) -> None:
    docs = render(helm)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted([
        "ServiceAccount", "ServiceAccount", "ClusterRole", "ClusterRole",
        "ClusterRoleBinding", "ClusterRoleBinding", "Role", "Role", "RoleBinding", "RoleBinding",
        "Deployment", "DaemonSet", "Service",
        "Service", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "Pod",
    ])
    for d in docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                             "ValidatingAdmissionPolicyBinding"):
            assert d["metadata"]["namespace"] == "headroom-system", d["kind"]


def test_agent_daemonset_is_wired_to_the_node(helm: Path) -> None:
    ds = one(render(helm), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    c = container(ds)
    assert c["args"][0] == "agent"
    env = env_of(c)
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["HEADROOM_CGROUP_ROOT"] == "/host/sys/fs/cgroup"
    assert env["HEADROOM_STATE_DIR"] == "/var/lib/headroom"
    assert env["HEADROOM_METRICS_PORT"] == "9808"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # read-write host cgroup tree at the path HEADROOM_CGROUP_ROOT names
    assert mounts["cgroup"]["mountPath"] == env["HEADROOM_CGROUP_ROOT"]
    assert not mounts["cgroup"].get("readOnly", False)
    assert volumes["cgroup"]["hostPath"] == {"path": "/sys/fs/cgroup", "type": "Directory"}
    assert mounts["state"]["mountPath"] == env["HEADROOM_STATE_DIR"]
    assert volumes["state"]["hostPath"]["path"] == "/var/lib/headroom"
    # runs everywhere, survives node pressure, bounded
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert set(c["resources"]) == {"requests", "limits"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert c["ports"] == [{"name": "health", "containerPort": 9809, "protocol": "TCP"},
                          {"name": "metrics", "containerPort": 9808, "protocol": "TCP"}]
    assert env["HEADROOM_HEALTH_PORT"] == "9809"
    # root for the cgroup files, but no privilege and no capabilities
    sc = c["securityContext"]
    assert sc["runAsUser"] == 0
    assert not sc.get("privileged", False)
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert not pod.get("hostPID") and not pod.get("hostNetwork")


def test_operator_is_a_single_unprivileged_replica(helm: Path) -> None:
    dep = one(render(helm), "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = container(dep)
    assert c["args"][0] == "operator"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["livenessProbe"]["httpGet"]["port"] == "health"
    assert not any(v.get("hostPath") for v in pod["volumes"])


def test_selectors_match_their_pods(helm: Path) -> None:
    docs = render(helm, {"metrics.serviceMonitor.enabled": "true"})
    for kind in ("Deployment", "DaemonSet"):
        w = one(docs, kind)
        selector = w["spec"]["selector"]["matchLabels"]
        assert selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
    agent_labels = one(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    operator_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    (svc,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    assert svc["spec"]["selector"].items() <= agent_labels.items()
    assert not svc["spec"]["selector"].items() <= operator_labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    sm = one(docs, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]


def test_metrics_off_removes_service_and_port_but_not_the_probes(helm: Path) -> None:
    docs = render(helm, {"metrics.enabled": "false", "metrics.serviceMonitor.enabled": "true"})
    assert not [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    assert not by_kind(docs, "ServiceMonitor")
    c = container(one(docs, "DaemonSet"))
    assert env_of(c)["HEADROOM_METRICS_PORT"] == "0"
    assert [p["name"] for p in c["ports"]] == ["health"]
    assert c["livenessProbe"]["httpGet"]["port"] == "health"
    assert c["readinessProbe"]["httpGet"]["port"] == "health"


def test_custom_image_and_digest(helm: Path) -> None:
    docs = render(helm, {"image.repository": "registry.example/team/headroom",
                         "image.tag": "1.2.3", "image.pullPolicy": "Always"})
    for kind in ("Deployment", "DaemonSet"):
        c = container(one(docs, kind))
        assert c["image"] == "registry.example/team/headroom:1.2.3"
        assert c["imagePullPolicy"] == "Always"
    digest = "sha256:" + "ab" * 32
    c = container(one(render(helm, {"image.digest": digest}), "DaemonSet"))
    assert c["image"] == f"headroom@{digest}"
    default = container(one(render(helm), "Deployment"))["image"]
    chart_version = (CHART / "Chart.yaml").read_text()
    assert default.startswith("headroom:") and f'appVersion: "{default.split(":")[1]}"' in (
        chart_version)


def test_node_restriction_policy_is_rendered_by_value(helm: Path) -> None:
    # on by default even where helm cannot see the API (helm template, GitOps renders)
    assert by_kind(render(helm, vap=False), "ValidatingAdmissionPolicy")
    # "auto": only when the cluster serves the API
    assert not by_kind(render(helm, {"agent.nodeRestriction.enabled": "auto"}, vap=False),
                       "ValidatingAdmissionPolicy")
    assert by_kind(render(helm, {"agent.nodeRestriction.enabled": "auto"}),
                   "ValidatingAdmissionPolicy")
    assert not by_kind(render(helm, {"agent.nodeRestriction.enabled": "false"}),
                       "ValidatingAdmissionPolicy")
    docs = render(helm, release="r1", namespace="ops")
    vap = one(docs, "ValidatingAdmissionPolicy")
    binding = one(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    agent_sa = one(render(helm, release="r1", namespace="ops"), "DaemonSet")["spec"]["template"][
        "spec"]["serviceAccountName"]
    condition = vap["spec"]["matchConditions"][0]["expression"]
    assert f'"system:serviceaccount:ops:{agent_sa}"' in condition
    rules = vap["spec"]["matchConstraints"]["resourceRules"][0]
    assert set(rules["resources"]) == {"nodereclaimplans", "nodereclaimplans/status"}
    assert "authentication.kubernetes.io/node-name" in vap["spec"]["validations"][0]["expression"]


def test_dry_run_and_tunables_reach_the_agent(helm: Path, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("agent: {dryRun: true, cpuBudget: 0.25, cgroupDriver: systemd,"
                      " kubeletCgroupRoot: /custom/path}\n")
    c = container(one(render(helm, values_files=(values,)), "DaemonSet"))
    env = env_of(c)
    assert env["HEADROOM_DRY_RUN"] == "true"
    assert env["HEADROOM_CPU_BUDGET"] == "0.25"
    assert env["HEADROOM_CGROUP_DRIVER"] == "systemd"
    assert env["HEADROOM_KUBELET_CGROUP_ROOT"] == "/custom/path"


REJECTED: dict[str, tuple[dict[str, str], str]] = {
    "unknown key": ({"agent.cgroupRoot": "/x"}, "additional properties"),
    "bad driver": ({"agent.cgroupDriver": "docker"}, "cgroupDriver"),
    "relative kubelet root": ({"agent.kubeletCgroupRoot": "kubelet"}, "kubeletCgroupRoot"),
    "zero budget": ({"agent.cpuBudget": "0"}, "cpuBudget"),
    "relative state dir": ({"agent.stateDir": "var/lib/x"}, "stateDir"),
    "port out of range": ({"metrics.port": "70000"}, "port"),
    "bad log level": ({"operator.logLevel": "verbose"}, "logLevel"),
    "bad pull policy": ({"image.pullPolicy": "Sometimes"}, "pullPolicy"),
    "bad digest": ({"image.digest": "sha256:xyz"}, "digest"),
    "bool as string": ({"metrics.enabled": "maybe"}, "enabled"),
    "bad interval": ({"metrics.serviceMonitor.interval": "30 seconds"}, "interval"),
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_schema_rejects(helm: Path, name: str) -> None:
    values, needle = REJECTED[name]
    proc = run_helm(helm, *template_args(values))
    assert proc.returncode != 0, f"helm accepted {values}"
    assert needle in proc.stderr, proc.stderr


def test_every_value_has_a_comment() -> None:
    """values.yaml documents each key: the line above it is a comment."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented: list[str] = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        key = stripped.split(":")[0]
        indent = len(line) - len(line.lstrip())
        parent_is_documented_map = _is_leaf_of_documented_map(lines, i, indent)
        if not lines[i - 1].strip().startswith("#") and not parent_is_documented_map:
            undocumented.append(f"line {i + 1}: {key}")
    assert not undocumented, undocumented


def _is_leaf_of_documented_map(lines: list[str], i: int, indent: int) -> bool:
    """Keys inside a documented default value (resources, securityContext, ...)
    are part of that value's example, not separate values."""
    for j in range(i - 1, -1, -1):
        line = lines[j]
        if not line.strip() or line.strip().startswith("#"):
            continue
        parent_indent = len(line) - len(line.lstrip())
        if parent_indent < indent:
            key = line.strip().split(":")[0]
            return key in DOCUMENTED_AS_A_WHOLE
    return False


DOCUMENTED_AS_A_WHOLE = {"resources", "requests", "limits", "podSecurityContext",
                         "securityContext", "seccompProfile", "capabilities", "nodeSelector",
                         "updateStrategy", "rollingUpdate"}



def test_helm_package_carries_crds_and_schema(helm: Path, tmp_path: Path) -> None:
    proc = run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (archive,) = tmp_path.glob("headroom-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    expected = {f"headroom/crds/{p.name}" for p in (CHART.parent.parent / "crds").glob("*.yaml")}
    assert expected and expected <= names
    assert {"headroom/values.schema.json", "headroom/templates/NOTES.txt"} <= names
