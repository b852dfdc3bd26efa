"""Weight-only int8/int4 quantization of the PLT's linear layers, with kernels chosen by measuring.

Decoding is memory-bound: each step reads every weight once, so bytes per
weight set the speed (int8 halves bf16's, int4 quarters it). Activations stay
in the model's dtype; only the weights of the 14 shared layers' linears (and
lm_head) are stored quantized:

- int8: symmetric, one scale per output channel, w = q * scale, q in [-127, 127];
- int4: asymmetric per group of `group_size` inputs, w = (q - 8) * scale + zero,
  q in [0, 15] (the convention of torch's int4 kernels and gpt-fast).

A checkpoint stores them device-neutrally (`X.weight` int8 [N, K] or uint8
[N, K/2] with the even column in the high nibble, `X.weight_scale`,
`X.weight_zero` in float32); at load each layer is converted to the layout of
the kernel that measured fastest on this device for its shape for decode
(up to 8 rows), and for more rows the kernel fitted cheapest at that row
count. On a CPU a decode step goes to our AVX-512 VNNI kernel (int8,
bf16/fp16 activations; native.py) or to torch's packed kernels, whose cost
grows with every row (64 rows cost 20x one), so a long prefill dequantizes a
block of output rows at a time into one small scratch buffer, then runs a
GEMM (the whole weight dequantized at once costs 5x more, in fresh pages).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import native
from .timing import MEASURE_WEIGHTS, best_seconds, relative_error

METHODS = ("int8", "int4")
DEFAULT_GROUP_SIZE = 128
DECODE_ROWS = 8  # a call with at most this many rows is a decode step (one row per loop and sequence)
MEASURE_ROWS = {"decode": (1, 2), "prefill": (16, 128)}  # prefill: two row counts, to fit a line
PREFILL_ROWS_FITTED = 4096  # the prefill kernel is chosen per row count up to this; the last one beyond
CHECK_FEATURES = 256  # the slice each kernel's product is checked on
DEQUANT_BLOCK_BYTES = 4 << 20  # blocked dequantization: the scratch block of weight rows, in the activations' dtype
MAX_RELATIVE_ERROR = 0.02  # a kernel's product vs the dequantized weight's (bf16 rounding gives ~0.003)
VNNI_DTYPES = (torch.bfloat16, torch.float16)  # int8_vnni_mm's 16-bit activations err far below these dtypes' rounding
CPU_PACK_ROWS = 64  # torch's CPU int4 pack interleaves rows in blocks of 64: byte [b, k, j] = W[64b+j, k] | W[64b+32+j, k] << 4
QUANT_BLOCK_ROWS = 1024  # quantize this many rows at a time: float32 temporaries stay small
STORED_TENSORS = {"int8": ("weight", "weight_scale"), "int4": ("weight", "weight_scale", "weight_zero")}
LINEAR_NAMES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@dataclass(frozen=True)
class QuantSpec:
    """What `config.plt_quantization` says: {"method": "int8"|"int4", "group_size": 128, "lm_head": true}."""

    method: str
    group_size: int = DEFAULT_GROUP_SIZE
    lm_head: bool = True

    @classmethod
    def parse(cls, value: "QuantSpec | dict | str | None") -> "QuantSpec | None":
        if value is None or isinstance(value, QuantSpec):
            return value
        if isinstance(value, str):
            value = {"method": value}
        if not isinstance(value, dict) or set(value) - {"method", "group_size", "lm_head"}:
            raise ValueError(f"quantization must be int8, int4 or {{method, group_size, lm_head}}, got {value!r}")
        spec = cls(**value)
        if spec.method not in METHODS:
            raise ValueError(f"quantization method must be one of {', '.join(METHODS)}, got {spec.method!r}")
        if isinstance(spec.group_size, bool) or not isinstance(spec.group_size, int) or spec.group_size < 16 \
                or spec.group_size & (spec.group_size - 1):
            raise ValueError(f"quantization group_size must be a power of two >= 16, got {spec.group_size!r}")
        return spec

    def to_dict(self) -> dict:
        return {"method": self.method, "group_size": self.group_size, "lm_head": self.lm_head}


def target_modules(config) -> list[str]:
    """Names of the linears a quantized model stores quantized (embeddings and the gate stay dense)."""
    spec = QuantSpec.parse(config.plt_quantization)
    names = [f"model.layers.{i}.{n}" for i in range(config.num_hidden_layers) for n in LINEAR_NAMES]
    return names + (["lm_head"] if spec is not None and spec.lm_head else [])


# --- the stored (device-neutral) form --------------------------------------


def quantize_weight(weight: torch.Tensor, spec: QuantSpec) -> dict[str, torch.Tensor]:
    """A dense weight [N, K] -> its stored tensors {"weight", "weight_scale"[, "weight_zero"]} on the CPU."""
    rows, columns = weight.shape
    codes = torch.int8 if spec.method == "int8" else torch.uint8
    stored = {name: torch.empty(shape, dtype=codes if name == "weight" else torch.float32)
              for name, shape in stored_shapes(spec.method, rows, columns, spec.group_size).items()}
    for start in range(0, rows, QUANT_BLOCK_ROWS):  # each block written in place: no list of blocks, no concatenation
        block = _quantize_rows(weight[start:start + QUANT_BLOCK_ROWS].to("cpu", torch.float32, copy=True), spec)
        for name, values in block.items():
            stored[name][start:start + QUANT_BLOCK_ROWS] = values
    return stored


def _quantize_rows(w: torch.Tensor, spec: QuantSpec) -> dict[str, torch.Tensor]:
    """A float32 block [N, K] of this call's own (overwritten in place: loading 7B weights is pass-bound)."""
    if spec.method == "int8":
        low, high = torch.aminmax(w, dim=1)
        scale = (torch.maximum(-low, high) / 127).clamp(min=1e-12)  # [N]
        return {"weight": w.div_(scale[:, None]).round_().clamp_(-127, 127).to(torch.int8), "weight_scale": scale}
    rows, cols = w.shape
    groups = w.view(rows, cols // spec.group_size, spec.group_size)  # [N, K/g, g]
    low, high = torch.aminmax(groups, dim=-1)
    scale = ((high - low) / 15).clamp(min=1e-12)  # [N, K/g]
    q = groups.sub_(low[..., None]).div_(scale[..., None]).round_().clamp_(0, 15).to(torch.uint8).view(rows, cols)
    return {"weight": q[:, 0::2] << 4 | q[:, 1::2], "weight_scale": scale, "weight_zero": low + 8 * scale}


def stored_shapes(method: str, out_features: int, in_features: int, group_size: int) -> dict[str, tuple[int, ...]]:
    """Suffix -> shape of the stored tensors of one quantized [out, in] linear."""
    if method == "int8":
        return {"weight": (out_features, in_features), "weight_scale": (out_features,)}
    groups = (out_features, in_features // group_size)
    return {"weight": (out_features, in_features // 2), "weight_scale": groups, "weight_zero": groups}


def dequantize(stored: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The dense weight [N, K] the stored tensors stand for."""
    q, scale = stored["weight"], stored["weight_scale"].to(dtype)
    if q.dtype == torch.int8:
        return q.to(dtype) * scale[:, None]
    rows = q.shape[0]
    values = torch.stack([q >> 4, q & 15], dim=-1).view(rows, scale.shape[1], -1).to(dtype)  # [N, K/g, g]
    return ((values - 8) * scale[..., None] + stored["weight_zero"].to(dtype)[..., None]).view(rows, -1)


# --- kernels: a layout to hold the weight in, and ways to multiply by it -----


@dataclass(frozen=True)
class Layout:
    """How a layer holds its quantized weight on a device: stored tensors -> (qweight, qscale, qzero)."""

    name: str
    method: str
    devices: tuple[str, ...]
    prepare: Callable[[dict, torch.dtype, torch.device, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Kernel:
    """x [M, K] @ W^T from a layout's tensors."""

    name: str
    layout: str
    run: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
    supports: Callable[[int, int], bool] = lambda out_features, in_features: True


def _empty(device) -> torch.Tensor:
    return torch.empty(0, device=device)


def _prepare_int8(stored, dtype, device, group_size):
    return stored["weight"].to(device), stored["weight_scale"].to(device, dtype), _empty(device)


def _prepare_nibbles(stored, dtype, device, group_size):
    return stored["weight"].to(device), stored["weight_scale"].to(device, dtype), stored["weight_zero"].to(device, dtype)


def _scales_and_zeros(stored, dtype, device) -> torch.Tensor:
    """[K/g, N, 2]: the scale/zero operand of torch's int4 kernels."""
    return torch.stack([stored["weight_scale"], stored["weight_zero"]], dim=-1).transpose(0, 1).contiguous().to(device, dtype)


def _prepare_int4_cpu(stored, dtype, device, group_size):
    q = stored["weight"]
    unpacked = torch.stack([q >> 4, q & 15], dim=-1).view(q.shape[0], -1).to(torch.int32)  # [N, K]
    return torch._convert_weight_to_int4pack_for_cpu(unpacked, 2), _scales_and_zeros(stored, dtype, device), _empty(device)


def _prepare_int4_cuda(stored, dtype, device, group_size):
    packed = torch._convert_weight_to_int4pack(stored["weight"].to(device), 8)
    return packed, _scales_and_zeros(stored, dtype, device), _empty(device)


def _prepare_int8_vnni(stored, dtype, device, group_size):
    """int8 [N, K], float32 scales [N], and each row's sum [N] (int8_vnni.c's correction for its offset)."""
    if dtype not in VNNI_DTYPES:
        raise NotImplementedError(f"int8_vnni_mm rounds activations to 16 bits, too coarse for {dtype}")
    why = native.int8_vnni_unavailable()
    if why:
        raise NotImplementedError(why)
    weight = stored["weight"].to(device).contiguous()
    return weight, stored["weight_scale"].to(device, torch.float32).contiguous(), native.int8_row_sums(weight)


def _int8_vnni(x, w, scale, rowsum, group_size):
    if x.dtype == torch.bfloat16:
        return native.int8_vnni_mm(x, w, scale, rowsum)
    return native.int8_vnni_mm(x.float(), w, scale, rowsum).to(x.dtype)


def _blocked_linear(x: torch.Tensor, out_features: int, block_rows: int, dequantize_into) -> torch.Tensor:
    """x [M, K] @ W^T [K, N], W dequantized `block_rows` output rows at a time into one reused scratch buffer
    by `dequantize_into(scratch [n, K], start, stop)` (a whole dequantized copy costs more than the GEMM)."""
    out = torch.empty(x.shape[0], out_features, dtype=x.dtype, device=x.device)  # [M, N]
    scratch = torch.empty(min(block_rows, out_features), x.shape[1], dtype=x.dtype, device=x.device)  # [n, K]
    for start in range(0, out_features, block_rows):
        stop = min(start + block_rows, out_features)
        out[:, start:stop] = F.linear(x, dequantize_into(scratch[:stop - start], start, stop))
    return out


def _block_rows(x: torch.Tensor, multiple: int = 1) -> int:
    rows = DEQUANT_BLOCK_BYTES // (x.shape[1] * x.element_size())
    return max(multiple, rows - rows % multiple)


def _dequant_int8(x, w, scale, zero, group_size):
    """Per-channel scales commute with the product: (x q^T) * scale."""
    out = _blocked_linear(x, w.shape[0], _block_rows(x), lambda scratch, start, stop: scratch.copy_(w[start:stop]))
    return out.mul_(scale)


def _scale_groups(scratch, scale, zero, group_size):
    """scratch [n, K] holding q -> (q - 8) * scale + zero per group of inputs (scale, zero [n, K/g])."""
    groups = scratch.view(scratch.shape[0], -1, group_size)  # [n, K/g, g]
    return groups.sub_(8).mul_(scale[:, :, None]).add_(zero[:, :, None]).view_as(scratch)


def _dequant_nibbles(x, w, scale, zero, group_size):
    def into(scratch, start, stop):  # [n, K] <- rows start..stop
        pairs = scratch.view(stop - start, -1, 2)  # [n, K/2, 2]: the even column is the high nibble
        pairs[..., 0].copy_(w[start:stop] >> 4)
        pairs[..., 1].copy_(w[start:stop] & 15)
        return _scale_groups(scratch, scale[start:stop], zero[start:stop], group_size)

    return _blocked_linear(x, w.shape[0], _block_rows(x), into)


def _dequant_cpu_pack(x, w, scales_and_zeros, zero, group_size):
    """Dequantize torch's CPU int4 pack (bytes [N/64, K, 32], see CPU_PACK_ROWS) 64 rows at a time."""
    in_features = x.shape[1]
    packed = w.view(-1, in_features, CPU_PACK_ROWS // 2)  # [N/64, K, 32]
    scale, zero = scales_and_zeros[..., 0].t(), scales_and_zeros[..., 1].t()  # [N, K/g] each
    half = CPU_PACK_ROWS // 2

    def into(scratch, start, stop):  # [n, K] <- rows start..stop
        blocks = packed[start // CPU_PACK_ROWS:stop // CPU_PACK_ROWS].transpose(1, 2)  # [b, 32, K]
        rows = scratch.view(-1, 2, half, in_features)  # [b, 2, 32, K]: low nibbles, then high
        rows[:, 0].copy_(blocks & 15)
        rows[:, 1].copy_(blocks >> 4)
        return _scale_groups(scratch, scale[start:stop], zero[start:stop], group_size)

    return _blocked_linear(x, packed.shape[0] * CPU_PACK_ROWS, _block_rows(x, CPU_PACK_ROWS), into)


LAYOUTS = {layout.name: layout for layout in (
    Layout("int8", "int8", ("cpu", "cuda"), _prepare_int8),
    Layout("int8-vnni", "int8", ("cpu",), _prepare_int8_vnni),
    Layout("int4-nibbles", "int4", ("cpu", "cuda"), _prepare_nibbles),
    Layout("int4-cpu-pack", "int4", ("cpu",), _prepare_int4_cpu),
    Layout("int4-cuda-pack", "int4", ("cuda",), _prepare_int4_cuda),
)}
KERNELS = (
    Kernel("int8pack_mm", "int8", lambda x, w, s, z, g: torch._weight_int8pack_mm(x, w, s)),
    Kernel("int8 dequant+linear", "int8", _dequant_int8),
    Kernel("int8_vnni_mm", "int8-vnni", _int8_vnni),
    Kernel("int8-vnni dequant+linear", "int8-vnni", _dequant_int8),
    Kernel("int4 dequant+linear", "int4-nibbles", _dequant_nibbles),
    Kernel("int4pack_mm_for_cpu", "int4-cpu-pack", lambda x, w, s, z, g: torch._weight_int4pack_mm_for_cpu(x, w, g, s)),
    Kernel("int4-cpu-pack dequant+linear", "int4-cpu-pack", _dequant_cpu_pack,
           supports=lambda out_features, in_features: out_features % CPU_PACK_ROWS == 0),  # no tail rows
    Kernel("int4pack_mm", "int4-cuda-pack", lambda x, w, s, z, g: torch._weight_int4pack_mm(x, w, g, s)),
)
KERNELS_BY_NAME = {k.name: k for k in KERNELS}


@dataclass(frozen=True)
class KernelChoice:
    layout: str
    decode: str  # the kernel for up to DECODE_ROWS rows
    prefill: tuple[tuple[int, str], ...]  # (up to this many rows, kernel) ascending; the last one also beyond
    seconds: dict  # (kernel, rows) -> measured seconds, for reports

    def kernel_for(self, rows: int) -> str:
        if rows <= DECODE_ROWS:
            return self.decode
        return next((name for limit, name in self.prefill if rows <= limit), self.prefill[-1][1])

    def describe(self) -> str:
        """'decode kernel / prefill kernel' or '... / k1 up to 40 rows, then k2'."""
        steps = [f"{name} up to {limit} rows" for limit, name in self.prefill[:-1]] + [self.prefill[-1][1]]
        return f"{self.decode} / {', then '.join(steps)}"


@functools.cache
def choose_kernels(method: str, out_features: int, in_features: int, group_size: int,
                   dtype: torch.dtype, device: str) -> KernelChoice:
    """Time every kernel this device has for a random weight of this shape; the layout of the fastest
    decode kernel, within it the fastest kernel for decode, and for more rows the fastest at each row
    count (a cost a + b * rows fitted to the two prefill timings: the packed decode kernels cost a lot
    per row, dequantize-then-GEMM a lot once). A kernel whose product departs from the dequantized
    weight's (a layout that changed under a torch upgrade) is left out."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    check = quantize_weight(torch.randn(min(out_features, CHECK_FEATURES), in_features, generator=generator),
                            QuantSpec(method, group_size))
    timed_rows = min(out_features, max(CHECK_FEATURES, MEASURE_WEIGHTS // in_features))
    if timed_rows < out_features:
        timed_rows -= timed_rows % CPU_PACK_ROWS  # a slice whole in torch's CPU int4 pack blocks
    timed = _random_stored(method, timed_rows, in_features, group_size, generator)
    counts = sorted({n for ns in MEASURE_ROWS.values() for n in ns})
    inputs = {n: torch.randn(n, in_features, generator=generator).to(device, dtype) for n in counts}
    check_x = inputs[counts[-1]]
    reference = F.linear(check_x.float(), dequantize(check).to(device))  # [M, rows]
    seconds: dict[tuple[str, int], float] = {}
    for layout in (l for l in LAYOUTS.values() if l.method == method and device.type in l.devices):
        try:
            checked = layout.prepare(check, dtype, device, group_size)
            tensors = layout.prepare(timed, dtype, device, group_size)
        except (RuntimeError, NotImplementedError):  # no such kernel for this device/dtype/shape
            continue
        for kernel in (k for k in KERNELS if k.layout == layout.name and k.supports(out_features, in_features)):
            try:
                if relative_error(kernel.run(check_x, *checked, group_size), reference) > MAX_RELATIVE_ERROR:
                    continue
                seconds.update({(kernel.name, n): _time(kernel, inputs[n], tensors, group_size) for n in counts})
            except (RuntimeError, NotImplementedError):
                continue
        del tensors
    if not seconds:
        raise RuntimeError(f"no {method} kernel runs on {device} with {dtype} activations for a "
                           f"[{out_features}, {in_features}] weight")
    names = list(dict.fromkeys(name for name, _ in seconds))
    decode = min(names, key=lambda k: sum(seconds[k, n] for n in MEASURE_ROWS["decode"]))
    layout = KERNELS_BY_NAME[decode].layout
    return KernelChoice(layout, decode, _prefill_steps([k for k in names if KERNELS_BY_NAME[k].layout == layout],
                                                       seconds), seconds)


def _random_stored(method: str, rows: int, in_features: int, group_size: int, generator) -> dict[str, torch.Tensor]:
    """Stored tensors of a [rows, in_features] weight with random codes: what the timings run on (quantizing
    a float weight this large would cost more than timing it)."""
    scale_shape = (rows,) if method == "int8" else (rows, in_features // group_size)
    stored = {"weight_scale": torch.rand(scale_shape, generator=generator) * 0.01 + 1e-3}
    if method == "int8":
        stored["weight"] = torch.randint(-127, 128, (rows, in_features), generator=generator, dtype=torch.int8)
    else:
        stored["weight"] = torch.randint(0, 256, (rows, in_features // 2), generator=generator, dtype=torch.uint8)
        stored["weight_zero"] = torch.rand(scale_shape, generator=generator) * 0.01
    return stored


def _prefill_steps(names: list[str], seconds: dict) -> tuple[tuple[int, str], ...]:
    """The fastest of `names` at each row count above DECODE_ROWS, from a line through the two prefill
    timings of each: ((up to rows, kernel), ...) with the last step open-ended."""
    low, high = MEASURE_ROWS["prefill"]

    def cost(name: str, rows: int) -> float:
        slope = (seconds[name, high] - seconds[name, low]) / (high - low)
        return seconds[name, low] + slope * (rows - low)

    steps: list[tuple[int, str]] = []
    for rows in range(DECODE_ROWS + 1, PREFILL_ROWS_FITTED + 1):
        best = min(names, key=lambda k: cost(k, rows))
        if steps and steps[-1][1] == best:
            steps[-1] = (rows, best)
        else:
            steps.append((rows, best))
    return tuple(steps)


def _time(kernel: Kernel, x: torch.Tensor, tensors, group_size: int) -> float:
    return best_seconds(lambda rows: kernel.run(rows, *tensors, group_size), x)


class QuantizedLinear(nn.Module):
    """A bias-optional linear whose weight is int8 or int4; y = x W^T (+ b) in the activations' dtype."""

    def __init__(self, in_features: int, out_features: int, spec: QuantSpec, bias: bool = False):
        super().__init__()
        if spec.method == "int4" and in_features % spec.group_size:
            raise ValueError(f"int4 quantization needs in_features ({in_features}) divisible by the group size "
                             f"({spec.group_size}); pick a group_size that divides it")
        self.in_features, self.out_features, self.spec = in_features, out_features, spec
        self.bias = nn.Parameter(torch.empty(out_features, device="meta")) if bias else None
        self.choice: KernelChoice | None = None
        for name in ("qweight", "qscale", "qzero"):  # the kernel layout's tensors: not a checkpoint format
            self.register_buffer(name, torch.empty(0, device="meta"), persistent=False)

    def load_stored(self, stored: dict[str, torch.Tensor], dtype: torch.dtype, device) -> None:
        """Take this layer's stored tensors; hold them in the layout of the kernels measured fastest here."""
        device = torch.device(device)
        self.choice = choose_kernels(self.spec.method, self.out_features, self.in_features, self.spec.group_size,
                                     dtype, str(device))
        self.qweight, self.qscale, self.qzero = LAYOUTS[self.choice.layout].prepare(
            stored, dtype, device, self.spec.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] -> [..., N]."""
        flat = x.reshape(-1, self.in_features)  # [M, K]
        run = KERNELS_BY_NAME[self.choice.kernel_for(flat.shape[0])].run
        out = run(flat.contiguous(), self.qweight, self.qscale, self.qzero, self.spec.group_size)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kernels = f", kernels={self.choice.describe()}" if self.choice else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.spec.method}{kernels}"


def install_placeholders(model: nn.Module, spec: QuantSpec) -> dict[str, QuantizedLinear]:
    """Put an empty QuantizedLinear where each target linear is; name -> module."""
    placed = {}
    for name in target_modules(model.config):
        linear = model.get_submodule(name)
        layer = QuantizedLinear(linear.in_features, linear.out_features, spec, bias=linear.bias is not None)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, layer)
        placed[name] = layer
    return placed


def quantize_model(model: nn.Module, quantize: "QuantSpec | dict | str") -> nn.Module:
    """Quantize a loaded model's target linears in place (tests, benchmarks); returns the model."""
    spec = QuantSpec.parse(quantize)
    if getattr(model.config, "plt_quantization", None):
        raise ValueError("this model is already quantized")
    model.config.plt_quantization = spec.to_dict()
    dense = {name: model.get_submodule(name) for name in target_modules(model.config)}
    dtype = model.get_input_embeddings().weight.dtype
    for name, layer in install_placeholders(model, spec).items():
        linear = dense[name]
        layer.load_stored(quantize_weight(linear.weight.detach(), spec), dtype, linear.weight.device)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
    return model


def kernel_report(model: nn.Module) -> dict[str, str]:
    """'[N, K]' -> 'layout: decode kernel / prefill kernel(s)' for each quantized shape of a model."""
    return {f"[{m.out_features}, {m.in_features}]": f"{m.choice.layout}: {m.choice.describe()}"
            for m in model.modules() if isinstance(m, QuantizedLinear) and m.choice is not None}
