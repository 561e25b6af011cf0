"""Quantization-aware fine-tuning: simulated int8 activations during training (straight-through).

Why (measured on the default model, ``docs/quantization.md``): int8 weights alone cost nothing (logit SQNR
41 dB, 99.3% top-1 agreement), but per-tensor int8 activations do: the noise entered at every cell's
separable-conv and BN outputs compounds over 16 cells, and post-training int8 (LiteRT or ExecuTorch) kept
only ~91% top-1 agreement with the float model. Calibration tricks recover 2-3 dB of the ~10 dB needed.
Fine-tuning with the int8 rounding simulated teaches the float weights to tolerate it; the result is a
normal float model (no extra layers, same state dict) that any post-training quantizer then converts well.

Simulated points are those where int8 deployment requantizes: the output of every BatchNorm (i.e. of
every conv/separable-conv after folding), every depthwise output (the input of a pointwise conv), every pool
and every cell output. Ranges are moving averages of per-batch min/max (TF's QAT convention), frozen in
eval mode; asymmetric uint8-equivalent steps, 256 levels, as the XNNPACK int8 kernels use.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class FakeQuantPoints:
    """Forward hooks that fake-quantize activations of a NASNet; ``enabled`` switches them off (float)."""

    def __init__(self, model: nn.Module, momentum: float = 0.01, observe_only_steps: int = 20):
        from edge.model.plan import Kind

        self.momentum = momentum
        self.observe_only_steps = observe_only_steps
        self.enabled = True
        self.ranges: dict[str, torch.Tensor] = {}
        self.seen: dict[str, int] = {}
        self._handles = []
        self._tapped = []  # (part module, node name): the plan's nodes whose outputs are simulated
        for part in [model.stem, *model.cells]:
            for n in part.nodes:
                if n.kind in (Kind.BATCH_NORM, Kind.MAX_POOL, Kind.AVG_POOL) or n.name == part.output:
                    part.taps[n.name] = self._tap(n.name, part)
                    self._tapped.append((part, n.name))
                # the depthwise output, inside a separable conv (the pointwise conv's input)
                if n.kind is Kind.SEPARABLE:
                    pw = part.layers[n.weights].pointwise
                    self._handles.append(pw.register_forward_pre_hook(self._pre(n.name + ".dw")))
                elif n.kind is Kind.CONV and n.weights.endswith("_pw"):  # a split separable's pointwise conv
                    self._handles.append(part.layers[n.weights].register_forward_pre_hook(self._pre(n.name + ".dw")))

    def __len__(self) -> int:
        return len(self._handles) + len(self._tapped)

    def state_dict(self) -> dict:
        """The observed ranges and step counts (saved in ``last.pt``, so a resumed run keeps them)."""
        return {"ranges": {k: v.detach().cpu().clone() for k, v in self.ranges.items()}, "seen": dict(self.seen)}

    def load_state_dict(self, state: dict, device=None) -> None:
        self.ranges = {k: v.to(device).clone() for k, v in state["ranges"].items()}
        self.seen = dict(state["seen"])

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        for part, name in self._tapped:
            part.taps.pop(name, None)
        self._handles, self._tapped = [], []

    def _tap(self, key: str, part: nn.Module):
        def tap(y):
            return self._apply(key, y, part.training)
        return tap

    def _pre(self, key: str):
        def hook(module, args):
            return (self._apply(key, args[0], module.training),) + tuple(args[1:])
        return hook

    def _post(self, key: str):
        def hook(module, args, out):
            return self._apply(key, out, module.training)
        return hook

    def _apply(self, key: str, x: torch.Tensor, training: bool) -> torch.Tensor:
        if not self.enabled:
            return x
        if training:
            with torch.no_grad():
                cur = torch.stack([x.detach().min().float().clamp(max=0), x.detach().max().float().clamp(min=0)])
                if key not in self.ranges:
                    self.ranges[key], self.seen[key] = cur, 0
                else:
                    self.ranges[key].lerp_(cur, self.momentum)
                self.seen[key] += 1
            if self.seen[key] <= self.observe_only_steps:
                return x
        elif key not in self.ranges:
            return x
        lo, hi = self.ranges[key]
        scale = ((hi - lo) / 255.0).clamp(min=1e-8)
        zero_point = torch.round(-lo / scale).clamp(0, 255).to(torch.int32)
        return torch.fake_quantize_per_tensor_affine(x, scale.reshape(()), zero_point.reshape(()), 0, 255)
