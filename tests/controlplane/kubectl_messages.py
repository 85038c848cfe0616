"""What `kubectl apply` says for each validation rule of the policy CRDs, asked of the
real kube-apiserver (the table in docs/api.md is this script's output):

    .venv/bin/python tests/controlplane/kubectl_messages.py KUBECONFIG   # markdown rows

The kubeconfig must reach a control plane with the CRDs of crds/ installed (the
control_plane fixture's admin kubeconfig; tests/controlplane/test_kubectl_messages.py
runs the cases and compares them with docs/api.md). Each case is a MemoryReclaimPolicy
`bad-N` in namespace default with one field changed; a policy that is created is
deleted again. Long patterns are shortened as in docs/api.md.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

VENV_BIN = Path(sys.executable).parent
BASE: dict[str, Any] = {"selector": {"matchLabels": {"app": "web"}},
                        "memoryHigh": {"limitPercent": 90}}


def _set(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return spec


def _labels(labels: dict[str, Any]) -> dict[str, Any]:
    return {**copy.deepcopy(BASE), "selector": {"matchLabels": labels}}


def _expr(key: str, values: list[str]) -> dict[str, Any]:
    return {**copy.deepcopy(BASE), "selector": {"matchExpressions": [
        {"key": key, "operator": "In", "values": values}]}}


CASES: list[tuple[str, dict[str, Any]]] = [
    ("`memoryHigh.bytes: 8Ei`", _set("memoryHigh", {"bytes": "8Ei"})),
    ("`memoryHigh.bytes: 99999999999Ei`", _set("memoryHigh", {"bytes": "99999999999Ei"})),
    ("`memoryHigh.bytes: 1e100`", _set("memoryHigh", {"bytes": 1e100})),
    ("`memoryHigh.bytes: 9223372036854775807`", _set("memoryHigh", {"bytes": 2**63 - 1})),
    ("`memoryHigh.bytes: 0Gi`", _set("memoryHigh", {"bytes": "0Gi"})),
    ("`reclaim.stepBytes: 1e100`", _set("reclaim.stepBytes", 1e100)),
    ("`reclaim.maxBytesPerSecond: 8Ei`", _set("reclaim.maxBytesPerSecond", "8Ei")),
    ("`reclaim.nodeCpuBudget: 400 digits`", _set("reclaim.nodeCpuBudget", "9" * 400)),
    ('`reclaim.nodeCpuBudget: "1000000"`', _set("reclaim.nodeCpuBudget", "1000000")),
    ("`reclaim.nodeCpuBudget: 2000`", _set("reclaim.nodeCpuBudget", 2000)),
    ('`reclaim.nodeCpuBudget: "0.0005"`', _set("reclaim.nodeCpuBudget", "0.0005")),
    ("`matchLabels` key of 64 characters", _labels({"a" * 64: "x"})),
    ("`matchLabels` key `a/b/c`", _labels({"a/b/c": "x"})),
    ("`matchLabels` key `Example.COM/app`", _labels({"Example.COM/app": "x"})),
    ('`matchLabels` key `" namespace"`', _labels({" namespace": "x"})),
    ("`matchLabels` value of 64 characters", _labels({"app": "v" * 64})),
    ('`matchLabels` value `"a b"`', _labels({"app": "a b"})),
    ('`matchLabels` value `"café"`', _labels({"app": "café"})),
    ("`matchLabels: {app: null}`", _labels({"app": None})),
    ("`matchLabels: {}`", _labels({})),
    ("`matchLabels: {app: null, tier: web}`", _labels({"app": None, "tier": "web"})),
    ("`matchExpressions` key `a/b/c`", _expr("a/b/c", ["x"])),
    ("`matchExpressions` `In` value `-x`", _expr("app", ["-x"])),
    ("`matchExpressions` `In` value `null`", _expr("app", [None])),  # type: ignore[list-item]
    ("65 `matchLabels`", _labels({f"k{i}": "v" for i in range(65)})),
]


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    text = re.sub(r"(bytes|stepBytes|maxBytesPerSecond) in body should match '[^']*'",
                  r"\1 in body should match '<the byte quantity pattern>'", text)
    text = re.sub(r"nodeCpuBudget in body should match '[^']*'",
                  "nodeCpuBudget in body should match '<the CPU pattern>'", text)
    text = re.sub(r'"9{400}"', '"999…999"', text)
    return text


def run(kubeconfig: str) -> list[tuple[str, str, str]]:
    """(case, "refused" | "**accepted**", kubectl's message) per case."""
    kubectl = str(VENV_BIN / "kubectl") if (VENV_BIN / "kubectl").exists() else "kubectl"
    rows = []
    for i, (label, spec) in enumerate(CASES):
        doc = {"apiVersion": "headroom.dev/v1alpha1", "kind": "MemoryReclaimPolicy",
               "metadata": {"name": f"bad-{i}", "namespace": "default"}, "spec": spec}
        proc = subprocess.run([kubectl, "--kubeconfig", kubeconfig, "apply", "-f", "-"],
                              input=yaml.safe_dump(doc, allow_unicode=True), text=True,
                              capture_output=True, timeout=60)
        if proc.returncode == 0:
            rows.append((label, "**accepted**", _shorten(proc.stdout)))
            subprocess.run([kubectl, "--kubeconfig", kubeconfig, "delete", "-n", "default",
                            "memoryreclaimpolicy", f"bad-{i}", "--wait=false"],
                           capture_output=True, timeout=60)
        else:
            rows.append((label, "refused", _shorten(proc.stderr)))
    return rows


def markdown(rows: list[tuple[str, str, str]]) -> str:
    out = ["| field and value | result | message |", "|---|---|---|"]
    out += [f"| {label} | {result} | `{msg}` |" for label, result, msg in rows]
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(run(sys.argv[1])))
