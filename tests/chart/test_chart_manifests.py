"""Rendered manifests against Kubernetes' own schemas, the RBAC we promise, the
headroom command line the containers run, and the CRDs the chart ships."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from chart_render import CHART, ROOT, Doc, by_kind, container, env_of, one, render
from headroom import agentcli as agent_cli
from headroom import cliflags
from headroom.controller import cli as operator_cli

VALUE_SETS: dict[str, dict[str, str]] = {
    "defaults": {},
    "metrics-off": {"metrics.enabled": "false"},
    "servicemonitor-on": {"metrics.serviceMonitor.enabled": "true"},
    "monitoring-on": {"metrics.podMonitor.enabled": "true",
                      "metrics.prometheusRule.enabled": "true",
                      "metrics.dashboard.enabled": "true"},
    "custom-image": {"image.repository": "registry.example/headroom", "image.tag": "1.2.3"},
    "no-probes": {"operator.livenessProbe.enabled": "false",
                  "agent.livenessProbe.enabled": "false",
                  "operator.readinessProbe.enabled": "false",
                  "agent.readinessProbe.enabled": "false"},
    "platform": {"agent.seLinuxOptions.type": "spc_t", "agent.priorityClassQuota.enabled": "true",
                 "crds.managed": "true", "agent.nodeRestriction.enabled": "auto"},
}
# Kinds that are not part of Kubernetes itself (their own CRDs define them).
NOT_IN_KUBERNETES = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
# The oldest Kubernetes the node-restriction policy renders for, and the newest known.
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_manifests_pass_kubernetes_validate_strict(helm: Path, name: str, version: str) -> None:
    docs = render(helm, VALUE_SETS[name], include_crds=True)
    checked = 0
    for doc in docs:
        if doc["kind"] in NOT_IN_KUBERNETES:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}): {e}")
        checked += 1
    assert checked >= 9


def test_validator_catches_a_broken_manifest(helm: Path) -> None:
    """The check above can fail: a misspelt field is rejected in strict mode."""
    ds = one(render(helm), "DaemonSet")
    ds["spec"]["template"]["spec"]["tolerration"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, KUBERNETES_VERSIONS[-1], strict=True)


# ---- RBAC: exactly what each component may do ---------------------------------

Rules = set[tuple[str, str, str]]


def expand_rules(role: Doc) -> Rules:
    return {(group, resource, verb)
            for rule in role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]}


def roles(helm: Path) -> dict[str, Rules]:
    docs = render(helm)
    out: dict[str, Rules] = {}
    for role in by_kind(docs, "ClusterRole"):
        component = role["metadata"]["labels"]["app.kubernetes.io/component"]
        out[component] = expand_rules(role)
    return out


def grant(groups: list[str], resources: list[str], verbs: list[str]) -> Rules:
    return {(g, r, v) for g in groups for r in resources for v in verbs}


# What the code calls (headroom/nodeagent/agent.py, planwatch.py, events.py;
# headroom/controller/kubeclient.py, handlers.py; kopf's discovery and posting).
EVENTS = grant([""], ["events"], ["create"])
READ = ["get", "list", "watch"]
POLICIES = ["memoryreclaimpolicies", "clustermemoryreclaimpolicies"]

AGENT_RULES = (grant(["headroom.dev"], ["nodereclaimplans"], READ)
               | grant(["headroom.dev"], ["nodereclaimplans/status"], ["patch"])
               | EVENTS)
OPERATOR_RULES = (
    grant([""], ["pods", "namespaces", "nodes"], READ)
    | grant(["headroom.dev"], POLICIES, READ)
    | grant(["headroom.dev"], [f"{p}/status" for p in POLICIES], ["patch"])
    | grant(["headroom.dev"], ["nodereclaimplans"], [*READ, "create", "patch", "delete"])
    | grant(["apiextensions.k8s.io"], ["customresourcedefinitions"], READ)
    | EVENTS)


def test_agent_role_is_exactly_plans_status_and_events(helm: Path) -> None:
    assert roles(helm)["agent"] == AGENT_RULES


def test_operator_role_is_exactly_what_it_needs(helm: Path) -> None:
    assert roles(helm)["operator"] == OPERATOR_RULES


def test_no_wildcards_secrets_or_workload_writes(helm: Path) -> None:
    for component, rules in roles(helm).items():
        for group, resource, verb in rules:
            assert "*" not in (group, resource, verb), component
            assert resource not in ("secrets", "configmaps", "pods/exec"), component
            if resource in ("pods", "nodes", "namespaces"):
                assert verb in READ, (component, resource, verb)


def test_bindings_name_the_chart_service_accounts(helm: Path) -> None:
    docs = render(helm, release="x", namespace="ns1")
    accounts = {sa["metadata"]["name"] for sa in by_kind(docs, "ServiceAccount")}
    for binding in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        (subject,) = binding["subjects"]
        assert subject["namespace"] == "ns1"
        assert subject["name"] in accounts
        assert binding["roleRef"]["name"] == binding["metadata"]["name"]
    workload_accounts = {w["spec"]["template"]["spec"]["serviceAccountName"]
                         for w in by_kind(docs, "Deployment") + by_kind(docs, "DaemonSet")}
    assert workload_accounts == accounts


# ---- the containers run commands and flags headroom really has ---------------

def parse_container(c: Doc, monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """Parse the container's args with headroom's own parsers, with its env set."""
    for name in list(os.environ):
        if name.startswith("HEADROOM_") or name == "NODE_NAME":
            monkeypatch.delenv(name)
    for name, value in env_of(c).items():
        # downward-API values are filled by the kubelet; any string will do here
        monkeypatch.setenv(name, value if isinstance(value, str) else "node-from-downward-api")
    parser = argparse.ArgumentParser(prog="headroom")
    sub = parser.add_subparsers(dest="command", required=True)
    agent_cli.add_parser(sub)
    operator_cli.add_parser(sub)
    try:
        return parser.parse_args(c["args"])
    except SystemExit:
        pytest.fail(f"headroom rejects the chart's args {c['args']}")


def test_agent_container_args_and_env_are_understood(
    helm: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = container(one(render(helm), "DaemonSet"))
    args = parse_container(c, monkeypatch)
    assert args.command == "agent"
    assert not args.standalone
    assert args.node_name == "node-from-downward-api"
    assert args.cgroup_root == "/host/sys/fs/cgroup"
    assert args.state_dir == "/var/lib/headroom"
    assert args.metrics_port == 9808
    assert args.cpu_budget == 0.5
    assert (args.cgroup_driver, args.kubelet_cgroup_root) == ("auto", "auto")
    assert args.dry_run is False
    cli_source = Path(agent_cli.__file__).read_text() + Path(cliflags.__file__).read_text()
    for name in env_of(c):
        assert f'"{name}"' in cli_source, f"the agent does not read {name}"


def test_operator_container_args_are_understood(
    helm: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for values in ({}, {"operator.livenessProbe.enabled": "false"}):
        c = container(one(render(helm, values), "Deployment"))
        assert parse_container(c, monkeypatch).command == "operator"


# ---- CRDs: one source of truth -------------------------------------------------

def crd_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.yaml"))}


def test_chart_crds_are_identical_to_crds_dir() -> None:
    source = crd_files(ROOT / "crds")
    assert source, "crds/ holds no CRD yet"
    copy = crd_files(CHART / "crds")
    fix = "refresh the chart's copy: cp crds/*.yaml charts/headroom/crds/"
    assert sorted(copy) == sorted(source), f"file sets differ; {fix}"
    for name, content in source.items():
        assert copy[name] == content, f"charts/headroom/crds/{name} drifted from crds/; {fix}"


def test_chart_installs_the_three_crds(helm: Path) -> None:
    docs = render(helm, include_crds=True)
    kinds = {d["spec"]["names"]["kind"]: d for d in by_kind(docs, "CustomResourceDefinition")}
    assert set(kinds) == {"MemoryReclaimPolicy", "ClusterMemoryReclaimPolicy", "NodeReclaimPlan"}
    for kind, crd in kinds.items():
        assert crd["spec"]["group"] == "headroom.dev", kind
    rbac_resources: set[Any] = {r for rules in roles(helm).values() for _, r, _ in rules}
    for crd in kinds.values():
        assert crd["spec"]["names"]["plural"] in rbac_resources
