"""The compression table of a run: per generation (and so for each generation's teacher, which is an earlier
row or the given generation 0) parameters, MACs, checkpoint size, measured latency and throughput, and the
ratios to generation 0. Figures are those :mod:`gendistill.compression` recorded in ``summary.json``."""

from __future__ import annotations

from typing import Any

HEADERS = ["model", "arch", "params", "MACs", "checkpoint MB", "latency ms (b=1)", "throughput /s", "params vs gen0",
           "MACs vs gen0", "speed-up vs gen0"]


def _value(v: Any) -> Any:
    return v.get("mean") if isinstance(v, dict) else v


def _num(v: Any, fmt: str) -> str:
    v = _value(v)
    return "-" if v is None else format(v, fmt)


def _ratio(a: Any, b: Any) -> str:
    a, b = _value(a), _value(b)
    return "-" if a is None or not b else f"{a / b:.2f}x"


def compression_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Rows of :data:`HEADERS` for every generation that has compression figures."""
    gens = [g for g in summary.get("generations", []) if _value(g.get("params")) is not None]
    if not gens:
        return []
    ref = gens[0]
    rows = []
    for g in gens:
        macs, ckpt = _value(g.get("macs")), _value(g.get("checkpoint_bytes"))
        rows.append([f"gen{g['gen']}", str(g.get("arch", "")), f"{_value(g['params']) / 1e6:.3f}M",
                     "-" if macs is None else f"{macs / 1e6:.2f}M" if macs >= 1e5 else f"{macs / 1e3:.1f}K",
                     "-" if ckpt is None else f"{ckpt / 2**20:.2f}",
                     _num(g.get("latency_ms"), ".2f"), _num(g.get("throughput"), ",.0f"),
                     _ratio(g.get("params"), ref.get("params")), _ratio(g.get("macs"), ref.get("macs")),
                     _ratio(g.get("throughput"), ref.get("throughput"))])
    return rows
