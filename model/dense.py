"""Dense linears on the CPU: where few-row products go to the native kernel, chosen by measuring.

Decode multiplies each weight by 1 row (a Llama), 2 rows (the PLT's one-pass step) or 2-34 rows
(checking drafted tokens). torch's CPU GEMMs are built for many rows: MKL's float32 product costs 2.2x a
1-row one at 4 rows and 3x at 8, and oneDNN reads bfloat16 weights at about 2/3 of float32's bandwidth.
`native.dense_mm` reads the weight once for up to 4 rows at a time. Which kernel runs is measured per
weight shape and dtype on the model's own weight (torch's stays wherever it is as fast), at each of
MEASURE_ROWS, and a product of r rows takes the choice made at the smallest measured count >= r.
Inference only: a weight that needs gradients keeps F.linear.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import native
from .timing import MEASURE_WEIGHTS, best_seconds, relative_error

# A pipelined draft check runs the pending token and up to 16 drafts through loop 0 and the previous pass's
# accepted tokens through loop 1, in one product: up to 34 rows.
MAX_ROWS = 34  # more rows than this: torch's GEMMs
MEASURE_ROWS = (1, 2, 4, 9, 18, 34)  # decode, one-pass PLT decode, draft checks (8 drafts: 9 or 18 rows; 16 drafts)
MIN_WEIGHTS = 1 << 20  # a smaller layer keeps F.linear unmeasured: per-call overhead outweighs its read
MAX_RELATIVE_ERROR = {torch.float32: 1e-5, torch.bfloat16: 2e-2}  # vs float64; bf16 output rounding is 2^-8 at most
REPEATS = 5
_choices: dict[tuple[int, int, torch.dtype], tuple[bool, ...]] = {}  # (N, K, dtype) -> native at rows 0..MAX_ROWS


class NativeLinear(nn.Linear):
    """An nn.Linear whose products of at most MAX_ROWS rows run on native.dense_mm where that was measured
    faster (`native_rows[rows]`); the same parameters and state dict as the nn.Linear it was."""

    native_rows: tuple[bool, ...] = (False,) * (MAX_ROWS + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] -> [..., N]."""
        rows = x.numel() // self.in_features
        if (rows > MAX_ROWS or not self.native_rows[rows] or x.device.type != "cpu"
                or (torch.is_grad_enabled() and self.weight.requires_grad)):
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(rows, self.in_features)  # [M, K]
        multiply = native.dense_mm if torch.compiler.is_compiling() else native.dense_mm_eager
        out = multiply(flat, self.weight)  # [M, N]
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)


def use_native_linears(model: nn.Module) -> dict[str, str]:
    """Make each large float32/bfloat16 CPU nn.Linear of `model` a NativeLinear with its measured row
    counts; '[N, K] dtype' -> 'dense_mm at rows ...' for the shapes where the native kernel won any
    (empty where it is unavailable: native.dense_unavailable() says why)."""
    if native.dense_unavailable():
        return {}
    report = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (type(module) not in (nn.Linear, NativeLinear) or weight.device.type != "cpu"
                or weight.dtype not in MAX_RELATIVE_ERROR or weight.numel() < MIN_WEIGHTS):
            continue
        module.__class__ = NativeLinear
        module.native_rows = native_rows(weight.detach())
        if any(module.native_rows):
            rows = [r for r in MEASURE_ROWS if module.native_rows[r]]
            report[f"[{module.out_features}, {module.in_features}] {str(weight.dtype).removeprefix('torch.')}"] = (
                f"dense_mm at {', '.join(map(str, rows))} rows")
    return report


def native_rows(weight: torch.Tensor) -> tuple[bool, ...]:
    """For rows 0..MAX_ROWS: whether dense_mm beats F.linear on this weight's shape and dtype (measured
    once per shape on up to MEASURE_WEIGHTS of this weight's rows; a kernel whose product departs from
    float64's is never chosen)."""
    key = (*weight.shape, weight.dtype)
    if key not in _choices:
        _choices[key] = _measure(weight[: max(1, MEASURE_WEIGHTS // weight.shape[1])].contiguous())
    return _choices[key]


def _measure(weight: torch.Tensor) -> tuple[bool, ...]:
    generator = torch.Generator().manual_seed(0)
    inputs = {n: torch.randn(n, weight.shape[1], generator=generator).to(weight.dtype) for n in MEASURE_ROWS}
    check = inputs[MEASURE_ROWS[-1]]
    reference = check.double() @ weight[:256].double().T  # [MAX_ROWS, <=256]
    if not relative_error(native.dense_mm_eager(check, weight[:256]), reference) <= MAX_RELATIVE_ERROR[weight.dtype]:
        return (False,) * (MAX_ROWS + 1)
    with torch.inference_mode():
        wins = {n: best_seconds(lambda x: native.dense_mm_eager(x, weight), x, REPEATS)
                < best_seconds(lambda x: F.linear(x, weight), x, REPEATS) for n, x in inputs.items()}
    return (False,) + tuple(wins[next(n for n in MEASURE_ROWS if n >= rows)] for rows in range(1, MAX_ROWS + 1))
