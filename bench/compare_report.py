"""The table and the plot of a bench/pagecache_compare.py result (runs on the host).

    table(doc) -> str        side by side: kernel alone | headroom's engine
    plot(doc, "out/demo.png")  memory.current over time for both arms, memory.high line,
                               and the cumulative memory.events `high` count below
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MiB = 1 << 20
COLUMNS = {"kernel": "kernel alone", "engine": "headroom engine"}


def _mib(n: float) -> str:
    return f"{n / MiB:,.0f} MiB"


def _ms(us: float) -> str:
    return f"{us / 1000:,.1f} ms"


def _s(us: float) -> str:
    return f"{us / 1e6:,.3f} s"


def rows(arm: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) of one arm, in table order."""
    lat, high = arm["latency_us"], arm["memory_high"]
    eng = arm.get("engine")
    return [
        ("workload stall, PSI some", _s(arm["psi_some_us"])),
        ("workload stall, PSI full", _s(arm["psi_full_us"])),
        ("memory.events high", f"{arm['high_events']:,}"),
        ("read latency p50", _ms(lat["p50"])),
        ("read latency p99", _ms(lat["p99"])),
        ("read latency max", _ms(lat["max"])),
        ("peak usage (memory.peak)",
         f"{_mib(arm['peak_bytes'])} = {100 * arm['peak_bytes'] / high:.1f}% of high"),
        ("streamed", f"{_mib(arm['bytes_read'])} in {arm['duration_s']:.1f} s"),
        ("file refaults (pages read back)", f"{arm.get('refault_file', 0):,}"),
        *([("hot-set passes (per s)",
            f"{arm['hot_passes']} ({arm['hot_passes'] / arm['hot_window_s']:.3f}/s)")]
          if arm.get("hot_window_s") else []),
        ("workload CPU", f"{arm['workload_cpu_s']:.1f} s"),
        ("bytes reclaimed by the engine", _mib(eng["reclaimed_bytes"]) if eng else "-"),
        ("engine CPU in memory.reclaim",
         f"{eng['reclaim_cpu_s']:.2f} s ({eng['reclaim_writes']} writes)" if eng else "-"),
        ("engine CPU, all threads", f"{eng['engine_cpu_s']:.2f} s" if eng else "-"),
    ]


def table(doc: dict[str, Any]) -> str:
    arms = doc["arms"]
    cols = [rows(a) for a in arms]
    labels = [label for label, _ in cols[0]]
    heads = [COLUMNS.get(a["name"], a["name"]) for a in arms]
    w0 = max(map(len, labels))
    widths = [max(len(h), *(len(v) for _, v in c)) for h, c in zip(heads, cols, strict=True)]
    high = arms[0]["memory_high"]
    opts = doc.get("options", {})
    title = (f"Linux {doc['kernel']}: {opts.get('passes', '?')} x {opts.get('file_mib', '?')} "
             f"MiB of page cache streamed through a cgroup at memory.high = {_mib(high)}")
    if opts.get("hot_mib"):
        title += f", while another process re-reads a hot {opts['hot_mib']} MiB file"
    lines = [title, "",
             "  ".join([" " * w0, *(h.rjust(w) for h, w in zip(heads, widths, strict=True))]),
             "  ".join(["-" * w0, *("-" * w for w in widths)])]
    for i, label in enumerate(labels):
        values = [c[i][1].rjust(w) for c, w in zip(cols, widths, strict=True)]
        lines.append("  ".join([label.ljust(w0), *values]))
    return "\n".join(lines)


def _first_growth(samples: list[list[float]]) -> float:
    """When usage first rose past 1 MiB (the workload's interpreter start-up before that
    differs between runs and says nothing)."""
    return next((s[0] for s in samples if s[1] > MiB), samples[0][0] if samples else 0.0)


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = doc["arms"]
    high = arms[0]["memory_high"] / MiB
    colors = {"kernel": "tab:red", "engine": "tab:blue"}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    for arm in arms:
        t0 = _first_growth(arm["samples"])
        t = [s[0] - t0 for s in arm["samples"]]
        label = COLUMNS.get(arm["name"], arm["name"])
        color = colors.get(arm["name"])
        top.plot(t, [s[1] / MiB for s in arm["samples"]], lw=0.9, color=color,
                 label=f"{label}: memory.current")
        bottom.plot(t, [s[2] for s in arm["samples"]], lw=1.2, color=color, label=label)
    top.axhline(high, color="black", lw=1.2, ls="--", label=f"memory.high = {high:.0f} MiB")
    top.axhline(high * 0.95, color="gray", lw=0.8, ls=":",
                label="engine starts reclaiming (95%)")
    top.set_ylabel("MiB")
    top.set_ylim(0, high * 1.12)
    top.legend(loc="lower right", fontsize=8)
    top.set_title(f"Page cache streamed through a cgroup, Linux {doc['kernel']}")
    bottom.set_ylabel("memory.events\nhigh (cumulative)")
    bottom.set_xlabel("seconds since the workload's first reads")
    bottom.set_xlim(left=-0.5)
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
