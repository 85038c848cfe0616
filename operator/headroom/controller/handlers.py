"""kopf wiring: credentials, settings, and the start and stop of reads and reconciler.

kopf runs the process (login, start-up and clean-up, liveness, signals) but reads
nothing for us: the operator's caches are its own informers (`informer.py`: one
list + watch per kind), because kopf's indexes cost objects² wake-ups at start-up.
The first round runs once every kind has been listed, so it sees the whole cluster
and a restart writes nothing when nothing changed. No handler stores progress on
objects and nothing adds finalizers: pods, namespaces and nodes are never blocked
from deletion, and a deleted policy needs no clean-up beyond the next level-based
round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import kopf
import kubernetes

from headroom.controller.informer import Informers
from headroom.controller.kubeclient import KubeClient, connection_info, load_configuration
from headroom.controller.reconciler import Reconciler, Snapshot

log = logging.getLogger("headroom.operator")


@dataclass
class OperatorOptions:
    kubeconfig: str | None = None     # None: $KUBECONFIG, else in-cluster, else ~/.kube/config
    debounce: float = 0.5             # seconds of quiet before a round
    max_delay: float = 5.0            # ... but no longer than this after the first event
    write_concurrency: int = 8
    watch_timeout: int = 300          # server-side timeout of each watch request (seconds)
    resync: float = 600.0             # seconds between full rounds; 0: every round is full


class OperatorState:
    """What the handlers share: the caches, the reconciler and its task."""

    def __init__(self, options: OperatorOptions) -> None:
        self.options = options
        self.informers: Informers | None = None
        self.reconciler: Reconciler | None = None
        self.task: asyncio.Task[None] | None = None
        self.metrics: Any = None      # controller.metrics.OperatorMetrics, set by main.operate
        self.started = time.monotonic()

    def snapshot(self) -> Snapshot:
        assert self.informers is not None
        caches = self.informers.caches
        return Snapshot(
            policies=caches["policies"].values(),
            cluster_policies=caches["cluster_policies"].values(),
            pods=caches["pods"].values(),
            namespaces=caches["namespaces"].values(),
            nodes=caches["nodes"].values(),
            plans={p["metadata"]["name"]: p for p in caches["plans"].values()},
        )

    def take_changes(self) -> list[Any]:
        assert self.informers is not None
        return self.informers.take_changes()

    async def run(self, synced: asyncio.Event) -> None:
        """The reconciler, once every kind has been listed."""
        assert self.reconciler is not None and self.informers is not None
        await synced.wait()
        log.info("caches synced: %d objects in %.2f s after start",
                 self.informers.objects(), time.monotonic() - self.started)
        self.reconciler.poke()
        await self.reconciler.run()


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
        settings.networking.request_timeout = 60
        cfg = load_configuration(options.kubeconfig)
        state.reconciler = Reconciler(KubeClient(cfg, concurrency=options.write_concurrency),
                                      state.snapshot, options.debounce, options.max_delay,
                                      changes=state.take_changes, resync=options.resync)
        state.reconciler.metrics = state.metrics
        loop = asyncio.get_running_loop()
        synced = asyncio.Event()
        poke_pending = False

        def poke() -> None:                 # in the loop
            nonlocal poke_pending
            poke_pending = False
            assert state.reconciler is not None
            state.reconciler.poke()

        def on_change() -> None:            # in an informer thread; coalesces bursts
            nonlocal poke_pending
            if not poke_pending:
                poke_pending = True
                loop.call_soon_threadsafe(poke)

        # The reads get their own connection pool (each watch holds a connection) and
        # no urllib3 retries: the informers back off and list again themselves.
        read_cfg = load_configuration(options.kubeconfig)
        read_cfg.connection_pool_maxsize = 8
        read_cfg.retries = 0
        state.informers = Informers(kubernetes.client.ApiClient(read_cfg), on_change,
                                    lambda: loop.call_soon_threadsafe(synced.set),
                                    watch_timeout=options.watch_timeout,
                                    track=options.resync > 0)
        state.informers.start()
        state.task = loop.create_task(state.run(synced))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if state.task is not None:
            state.task.cancel()
        if state.informers is not None:
            await asyncio.to_thread(state.informers.stop)

    return registry, state
