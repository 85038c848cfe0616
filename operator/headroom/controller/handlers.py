"""kopf wiring: credentials, settings, indexes of everything watched, and the reconciler.

kopf only reads here. Each watched kind has an index (a copy of every object,
kept current by kopf's watch) and an event handler that pokes the reconciler.
kopf holds back non-index handlers until every index has finished its initial
listing, so the first round sees the whole cluster and a restart writes nothing
when nothing changed. No handler here stores progress on objects and nothing adds
finalizers: pods, namespaces and nodes are never blocked from deletion, and a
deleted policy needs no clean-up beyond the next level-based round.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from headroom.api import GROUP, VERSION
from headroom.controller.kubeclient import KubeClient, connection_info, load_configuration
from headroom.controller.reconciler import Reconciler, Snapshot


@dataclass
class OperatorOptions:
    kubeconfig: str | None = None     # None: $KUBECONFIG, else in-cluster, else ~/.kube/config
    debounce: float = 0.5             # seconds of quiet before a round
    max_delay: float = 5.0            # ... but no longer than this after the first event
    write_concurrency: int = 8
    watch_timeout: float | None = None    # server-side watch timeout (None: kopf's default)


# index name -> (group, version, plural); the names are also the handlers' kwargs
WATCHED = {
    "policies_idx": (GROUP, VERSION, "memoryreclaimpolicies"),
    "cluster_policies_idx": (GROUP, VERSION, "clustermemoryreclaimpolicies"),
    "pods_idx": ("", "v1", "pods"),
    "namespaces_idx": ("", "v1", "namespaces"),
    "nodes_idx": ("", "v1", "nodes"),
    "plans_idx": (GROUP, VERSION, "nodereclaimplans"),
}


def _copy(body: Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy({k: v for k, v in body.items()})


def _values(index: Any) -> list[dict[str, Any]]:
    return [value for _, store in sorted(index.items()) for value in store]


class OperatorState:
    """What the handlers share: the indexes (once kopf hands them over) and the loop."""

    def __init__(self, options: OperatorOptions) -> None:
        self.options = options
        self.indexes: dict[str, Any] = {}
        self.reconciler: Reconciler | None = None
        self.task: asyncio.Task[None] | None = None

    def snapshot(self) -> Snapshot:
        idx = self.indexes
        return Snapshot(
            policies=_values(idx["policies_idx"]),
            cluster_policies=_values(idx["cluster_policies_idx"]),
            pods=_values(idx["pods_idx"]),
            namespaces=_values(idx["namespaces_idx"]),
            nodes=_values(idx["nodes_idx"]),
            plans={p["metadata"]["name"]: p for p in _values(idx["plans_idx"])},
        )


def build_registry(options: OperatorOptions | None = None) -> tuple[kopf.OperatorRegistry,
                                                                    OperatorState]:
    """A fresh registry (tests run several operators, one after another, in one process)."""
    options = options or OperatorOptions()
    registry = kopf.OperatorRegistry()
    state = OperatorState(options)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(load_configuration(options.kubeconfig))

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Single replica, no peering: plans are level-based and agents keep enforcing
        # their last plan while the operator is away (docs/operator.md).
        settings.peering.standalone = True
        settings.posting.level = logging.WARNING
        settings.watching.reconnect_backoff = 0.1
        if options.watch_timeout is not None:
            settings.watching.server_timeout = options.watch_timeout
        settings.networking.request_timeout = 60
        client = KubeClient(load_configuration(options.kubeconfig),
                            concurrency=options.write_concurrency)
        state.reconciler = Reconciler(client, state.snapshot, options.debounce,
                                      options.max_delay)
        # Idle until the first event handler pokes it, i.e. after all initial listings.
        state.task = asyncio.get_running_loop().create_task(state.reconciler.run())

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if state.task is not None:
            state.task.cancel()

    def poke(kwargs: Mapping[str, Any]) -> None:
        if not state.indexes:
            state.indexes = {name: kwargs[name] for name in WATCHED}
        if state.reconciler is not None:
            state.reconciler.poke()

    for name, (group, version, plural) in WATCHED.items():
        async def index_fn(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
            meta = body.get("metadata", {})
            return {(meta.get("namespace") or "", meta.get("name", "")): _copy(body)}

        async def event_fn(**kwargs: Any) -> None:
            poke(kwargs)

        where = (group, version, plural) if group else (version, plural)
        kopf.index(*where, id=name, registry=registry)(index_fn)
        kopf.on.event(*where, id=f"poke-{plural}", registry=registry)(event_fn)

    return registry, state
