"""Rendering helpers of the chart tier (imported by its conftest and tests)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "headroom"
# Render as a cluster that serves ValidatingAdmissionPolicy at v1 (>= 1.30), so
# that the optional node-restriction templates are rendered and checked too.
VAP_API = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"

Doc = dict[str, Any]


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, check=False)


def template_args(values: dict[str, str] | None = None, *, release: str = "hr",
                  namespace: str = "headroom-system", include_crds: bool = False,
                  vap: bool = True, values_files: tuple[Path, ...] = ()) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for key, value in (values or {}).items():
        args += ["--set", f"{key}={value}"]
    for f in values_files:
        args += ["--values", str(f)]
    if include_crds:
        args.append("--include-crds")
    if vap:
        args += ["--api-versions", VAP_API]
    return args


def render(helm: Path, values: dict[str, str] | None = None, **kw: Any) -> list[Doc]:
    """helm template the chart; the parsed documents. Fails on a helm error."""
    proc = run_helm(helm, *template_args(values, **kw))
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str) -> Doc:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(workload: Doc) -> Doc:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: Doc) -> dict[str, Any]:
    """name -> value, or the valueFrom mapping for downward-API variables."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}
