"""Issue 21: the AVX-512 VNNI int8 kernel (model/int8_vnni.c via model/native.py), built from source here."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from loopcoder.model import native, quantize
from loopcoder.model.quantize import KernelChoice, QuantizedLinear, QuantSpec, quantize_weight

needs_vnni = pytest.mark.skipif(bool(native.int8_vnni_unavailable()),
                                reason=f"int8_vnni_mm: {native.int8_vnni_unavailable()}")


def _weights(rows: int, columns: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """int8 [N, K] over the whole range (-128 too), float32 scales [N], row sums [N]."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randint(-128, 128, (rows, columns), generator=generator, dtype=torch.int8)
    scale = torch.rand(rows, generator=generator) * 0.1 + 1e-3
    return weight, scale, weight.sum(1, dtype=torch.int32)


@needs_vnni
@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 12), columns=st.integers(1, 300), features=st.integers(1, 13), seed=st.integers(0, 2**16))
def test_16_bit_activations_give_the_exact_integer_product(rows, columns, features, seed):
    """x already on the 16-bit grid (integers, one of them +-32767): every tail of K and N, every pairing of
    rows, the offset and both byte planes must combine to the exact dot product (float64 reference)."""
    weight, scale, rowsum = _weights(features, columns, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randint(-32767, 32768, (rows, columns), generator=generator).float()
    x[:, 0] = 32767 * torch.where(torch.rand(rows, generator=generator) < 0.5, -1.0, 1.0)  # the row's peak
    got = native.int8_vnni_mm(x, weight, scale, rowsum)
    want = (x.double() @ weight.double().t()) * scale.double()  # [M, N]
    assert got.dtype == torch.float32 and got.shape == (rows, features)
    assert torch.allclose(got.double(), want, rtol=1e-6, atol=1e-6 * want.abs().max().item())


@needs_vnni
@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 9), columns=st.integers(1, 700), features=st.integers(1, 40), seed=st.integers(0, 2**16),
       magnitude=st.sampled_from([1e-30, 1e-3, 1.0, 1e4, 1e30]))
def test_bf16_activations_are_within_their_own_rounding(rows, columns, features, seed, magnitude):
    weight, scale, rowsum = _weights(features, columns, seed)
    x = (torch.randn(rows, columns, generator=torch.Generator().manual_seed(seed)) * magnitude).bfloat16()
    got = native.int8_vnni_mm(x, weight, scale, rowsum)
    want = (x.double() @ weight.double().t()) * scale.double()  # [M, N]
    assert got.dtype == torch.bfloat16
    # per element: bf16 rounding of the output (2^-8 of it at most), plus the 16-bit rounding of x (half a step,
    # max|x| / 32767, on every weight), plus float32's rounding of the final product
    step = x.double().abs().amax(1, keepdim=True) / 32767  # [M, 1]
    bound = want.abs() * (2 ** -8 + 1e-6) + step / 2 * (weight.double().abs().sum(1) * scale.double())[None, :]
    assert bool(((got.double() - want).abs() <= bound * 1.01).all())


@needs_vnni
def test_float16_activations_go_through_float32_and_come_back_as_float16():
    stored = quantize_weight(torch.randn(40, 200, generator=torch.Generator().manual_seed(3)), QuantSpec("int8"))
    tensors = quantize.LAYOUTS["int8-vnni"].prepare(stored, torch.float16, torch.device("cpu"), 128)
    x = torch.randn(3, 200, generator=torch.Generator().manual_seed(4)).half()
    got = quantize.KERNELS_BY_NAME["int8_vnni_mm"].run(x, *tensors, 128)
    want = F.linear(x.float(), quantize.dequantize(stored))
    assert got.dtype == torch.float16
    assert ((got.float() - want).norm() / want.norm()).item() < 1e-3


@needs_vnni
def test_zero_and_non_finite_rows():
    weight, scale, rowsum = _weights(5, 70, 0)
    x = torch.zeros(3, 70, dtype=torch.bfloat16)
    x[1, 3], x[2, 69] = float("inf"), float("nan")
    got = native.int8_vnni_mm(x, weight, scale, rowsum)
    assert bool((got[0] == 0).all())
    assert bool(got[1:].isnan().all())  # as the dense product is not finite either


@needs_vnni
def test_a_layer_on_the_vnni_kernel_compiles_into_one_graph():
    """The kernel is a torch custom op with a fake: torch.compile(fullgraph=True) traces through it."""
    stored = quantize_weight(torch.randn(48, 96, generator=torch.Generator().manual_seed(0)), QuantSpec("int8"))
    layer = QuantizedLinear(96, 48, QuantSpec("int8"))
    layer.qweight, layer.qscale, layer.qzero = quantize.LAYOUTS["int8-vnni"].prepare(
        stored, torch.bfloat16, torch.device("cpu"), 128)
    layer.choice = KernelChoice("int8-vnni", "int8_vnni_mm", ((4096, "int8-vnni dequant+linear"),), {})
    x = torch.randn(2, 96).bfloat16()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), layer(x))
    assert torch.equal(layer(x), native.int8_vnni_mm(x, layer.qweight, layer.qscale, layer.qzero))


def test_without_a_compiler_the_kernel_is_unavailable_and_torch_kernels_are_chosen(monkeypatch, fresh_build):
    """A machine with no working C compiler: no crash, a reason, and int8 still loads on torch's kernels."""
    monkeypatch.setenv("CC", "false")  # a compiler that always fails
    quantize.choose_kernels.cache_clear()
    try:
        why = native.int8_vnni_unavailable()
        assert why and ("failed" in why or "lacks" in why)
        with pytest.raises(NotImplementedError):
            quantize.LAYOUTS["int8-vnni"].prepare(quantize_weight(torch.randn(8, 64), QuantSpec("int8")),
                                                 torch.bfloat16, torch.device("cpu"), 128)
        choice = quantize.choose_kernels("int8", 64, 128, 128, torch.bfloat16, "cpu")
        assert choice.layout == "int8" and "vnni" not in choice.describe()
        assert not list(fresh_build.glob("*.partial"))  # a failed build leaves nothing behind
    finally:
        quantize.choose_kernels.cache_clear()


BROKEN_BUILDS = {  # the kernel's two functions, built fine, but dying on the CPU or computing something else
    "SIGILL": "void loopcoder_int8_vnni_mm(void) { __builtin_trap(); }",
    "wrong products": "int loopcoder_int8_vnni_mm(void) { return 0; }",
}


@pytest.mark.skipif(native._compiler() is None, reason="no C compiler on PATH")
@pytest.mark.parametrize("failure", BROKEN_BUILDS)
def test_a_build_that_fails_its_self_test_is_neither_cached_nor_loaded(failure, monkeypatch, tmp_path, fresh_build):
    source = tmp_path / "int8_vnni.c"
    source.write_text("void loopcoder_int8_row_sums(void) {}\n" + BROKEN_BUILDS[failure] + "\n")
    monkeypatch.setattr(native, "INT8_VNNI", dataclasses.replace(native.INT8_VNNI, source=source))
    monkeypatch.setattr(native, "_missing_cpu_flags", lambda wanted: [])  # as if the CPU said it had VNNI
    why = native.int8_vnni_unavailable()
    assert "self-test" in why and failure in why, why
    assert not list(fresh_build.iterdir())  # nothing cached: the next process tries again


@needs_vnni
def test_the_kernel_choice_measures_the_vnni_kernel_for_16_bit_activations_only():
    quantize.choose_kernels.cache_clear()
    bf16 = quantize.choose_kernels("int8", 64, 128, 128, torch.bfloat16, "cpu")
    fp32 = quantize.choose_kernels("int8", 64, 128, 128, torch.float32, "cpu")
    assert {("int8_vnni_mm", 1), ("int8-vnni dequant+linear", 128)} <= set(bf16.seconds)
    assert not any("vnni" in name for name, _ in fp32.seconds)
