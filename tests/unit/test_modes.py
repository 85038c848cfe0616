"""Modes are strategies registered by name: a new one needs no change in the engine."""

from __future__ import annotations

from headroom.engine import ReclaimEngine, ReclaimSettings, Target, modes

MiB = 1 << 20


class Fixed(modes.Mode):
    """Reclaims one fixed step at every check, whatever the usage."""

    name = "TestFixed"

    def want(self, c: modes.Check) -> tuple[int, float]:
        return 4 * MiB, 1.0


def test_builtin_modes_are_registered():
    assert set(modes.names()) >= {"Watermark", "Pressure", "Off"}
    assert ReclaimSettings(mode="Nope").problems()[0][0] == "mode"


def test_a_registered_mode_is_used_by_the_engine(fake_kernel):
    modes.register(Fixed())
    try:
        assert ReclaimSettings(mode="TestFixed").problems() == []
        fake_kernel.tree.add("a", current=10 * MiB)   # far below any watermark
        now = [0.0]
        e = ReclaimEngine(fake_kernel, cpu_budget_cores=None, workers=0, clock=lambda: now[0])
        e.set_targets([Target("a", fake_kernel.tree.path("a"), 256 * MiB,
                              ReclaimSettings(mode="TestFixed"))])
        for _ in range(3):
            e.tick(now[0])
            now[0] += 1.0
        calls = [n for _, n, _ in fake_kernel.reclaim_calls]
        assert calls[1:] == [4 * MiB] * 3   # after the one-page capability probe
        e.stop()
    finally:
        modes.base._REGISTRY.pop("TestFixed")
