"""Static cost model: multiply-adds and parameters per part, counted from the compiled plan."""

from __future__ import annotations

from edge.model.config import NASNetConfig


def part_macs(config: NASNetConfig) -> list[dict]:
    """[{name, macs, params}] for stem, each cell and head of the reference network, at the config's input size."""
    from edge.model.plan import compile

    plan = compile(config)
    macs, params = plan.macs(), plan.params()
    return [{"name": p.name, "macs": macs.get(p.name, 0), "params": params.get(p.name, 0)} for p in plan.parts()]
