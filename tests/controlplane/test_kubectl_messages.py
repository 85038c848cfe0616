"""docs/api.md's table of what `kubectl apply` says for each policy rule is what the real
kube-apiserver says (kubectl_messages.py asks it)."""

from __future__ import annotations

import pathlib

from controlplane import ControlPlane
from kubectl_messages import markdown, run

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_kubectl_messages_in_docs_api_md_are_the_servers(control_plane: ControlPlane
                                                              ) -> None:
    control_plane.install_crds(ROOT / "crds")
    rows = run(str(control_plane.kubeconfig))
    doc = (ROOT / "docs" / "api.md").read_text()
    missing = [row for row in markdown(rows).splitlines()[2:] if row not in doc]
    assert not missing, "docs/api.md differs from the server; its rows now:\n" + "\n".join(
        missing)
    # the one a server cannot refuse: the operator does (tests/unit/test_crds.py)
    assert [r[0] for r in rows if r[1] != "refused"] == ["`matchLabels: {app: null, tier: web}`"]
