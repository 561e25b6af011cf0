"""Static cost model: multiply-adds and parameters per cell, counted from the real PyTorch modules."""

from __future__ import annotations

from edge.model.config import NASNetConfig


def part_macs(config: NASNetConfig) -> list[dict]:
    """[{name, macs, params}] for stem, each cell and head, at the config's input size."""
    import torch

    from edge.model.torch_model import build_torch_model

    model = build_torch_model(config)
    counts: dict[int, int] = {}

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            counts[id(module)] = output.numel() * k
        elif isinstance(module, torch.nn.Linear):
            counts[id(module)] = module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.inference_mode():
        model(torch.zeros(1, 3, config.input_size, config.input_size))
    for h in handles:
        h.remove()

    def total(module) -> tuple[int, int]:
        macs = sum(counts.get(id(m), 0) for m in module.modules())
        params = sum(p.numel() for p in module.parameters())
        return macs, params

    out = [{"name": "stem", **dict(zip(("macs", "params"), total(model.stem)))}]
    for spec, cell in zip(model.specs, model.cells):
        out.append({"name": spec.name, **dict(zip(("macs", "params"), total(cell)))})
    out.append({"name": "head", **dict(zip(("macs", "params"), total(model.head)))})
    return out
