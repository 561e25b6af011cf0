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
        from edge.model.torch_model import (Cell, KerasBatchNorm2d, KerasSeparableConv2d, Pool, SplitSeparableConv2d,
                                      Stem)

        self.momentum = momentum
        self.observe_only_steps = observe_only_steps
        self.enabled = True
        self.ranges: dict[str, torch.Tensor] = {}
        self.seen: dict[str, int] = {}
        self._handles = []
        for name, mod in model.named_modules():
            if isinstance(mod, (KerasSeparableConv2d, SplitSeparableConv2d)):
                self._handles.append(mod.pointwise.register_forward_pre_hook(self._pre(name + ".dw")))
            if isinstance(mod, (KerasBatchNorm2d, Pool, Cell, Stem)):
                self._handles.append(mod.register_forward_hook(self._post(name)))

    def __len__(self) -> int:
        return len(self._handles)

    def state_dict(self) -> dict:
        """The observed ranges and step counts (saved in ``last.pt``, so a resumed run keeps them)."""
        return {"ranges": {k: v.detach().cpu().clone() for k, v in self.ranges.items()}, "seen": dict(self.seen)}

    def load_state_dict(self, state: dict, device=None) -> None:
        self.ranges = {k: v.to(device).clone() for k, v in state["ranges"].items()}
        self.seen = dict(state["seen"])

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

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
