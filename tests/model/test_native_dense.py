"""Issue 21: the few-row dense kernel (model/dense_avx512.c via model/native.py) and where it is used (model/dense.py)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from loopcoder.model import dense, native
from loopcoder.model.dense import MAX_ROWS, NativeLinear, use_native_linears

needs_kernel = pytest.mark.skipif(bool(native.dense_unavailable()), reason=f"dense_mm: {native.dense_unavailable()}")
EVERY_ROW = (False,) + (True,) * MAX_ROWS  # NativeLinear.native_rows sending every few-row product to dense_mm


def _operands(rows: int, columns: int, features: int, seed: int, dtype: torch.dtype, magnitude: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, columns, generator=generator) * magnitude).to(dtype)
    weight = torch.randn(features, columns, generator=generator).to(dtype)
    return x, weight


def _summation_bound(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """What float32 accumulation in any order may add to exact products: K * 2^-24 * sum |x w| (per element)."""
    return x.shape[1] * 2.0 ** -24 * (x.double().abs() @ weight.double().abs().t())


@needs_kernel
@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, MAX_ROWS), columns=st.integers(1, 300), features=st.integers(1, 13),
       seed=st.integers(0, 2**16), magnitude=st.sampled_from([1e-3, 1.0, 1e4]))
def test_float32_products_are_within_float32_summation_error(rows, columns, features, seed, magnitude):
    """Every tail of K (16 floats a step) and N (4 weight rows a block), every count of x rows per pass."""
    x, weight = _operands(rows, columns, features, seed, torch.float32, magnitude)
    got = native.dense_mm(x, weight)
    want = x.double() @ weight.double().t()  # [M, N]
    assert got.dtype == torch.float32 and got.shape == (rows, features)
    assert bool(((got.double() - want).abs() <= _summation_bound(x, weight) * 1.01 + 1e-30).all())


@needs_kernel
@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, MAX_ROWS), columns=st.integers(1, 300), features=st.integers(1, 13),
       seed=st.integers(0, 2**16), magnitude=st.sampled_from([1e-3, 1.0, 1e4]))
def test_bfloat16_products_are_exact_products_summed_in_float32_then_rounded(rows, columns, features, seed, magnitude):
    """bf16 x bf16 products are exact in float32; the sum errs like float32's, the result by bf16's rounding
    (2^-8 of it); K tails of 32 (odd K too: a lone bf16 in the last pair)."""
    x, weight = _operands(rows, columns, features, seed, torch.bfloat16, magnitude)
    got = native.dense_mm(x, weight)
    want = x.double() @ weight.double().t()  # [M, N]
    assert got.dtype == torch.bfloat16
    bound = want.abs() * 2.0 ** -8 + _summation_bound(x, weight) * (1 + 2.0 ** -8)
    assert bool(((got.double() - want).abs() <= bound * 1.01 + 1e-30).all())


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_rows_give_zeros_and_a_non_finite_row_stays_in_its_row(dtype):
    x, weight = _operands(6, 100, 9, 0, dtype)
    x[1] = 0
    x[4, 17] = float("nan")
    x[5, 3] = float("inf")
    got = native.dense_mm(x, weight).float()
    assert bool((got[1] == 0).all())
    assert bool(got[4].isnan().all()) and not bool(got[5].isfinite().any())
    assert bool(got[[0, 2, 3]].isfinite().all())


@needs_kernel
def test_mismatched_operands_are_refused_with_what_was_given():
    with pytest.raises(ValueError, match="same dtype, both on the CPU"):
        native.dense_mm_eager(torch.randn(2, 8), torch.randn(3, 8).bfloat16())
    with pytest.raises(ValueError, match=r"\(3, 9\)"):
        native.dense_mm_eager(torch.randn(2, 8), torch.randn(3, 9))


def _linear(in_features: int = 512, out_features: int = 2048, dtype=torch.float32, bias: bool = False) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(in_features, out_features, bias=bias, dtype=dtype)


@needs_kernel
@pytest.mark.parametrize("bias", [False, True])
def test_a_native_linear_matches_f_linear_for_few_rows_and_hands_more_to_torch(bias):
    linear = _linear(bias=bias)
    reference = nn.Linear(512, 2048, bias=bias)
    reference.load_state_dict(linear.state_dict())
    linear.__class__, linear.native_rows = NativeLinear, EVERY_ROW
    assert set(linear.state_dict()) == set(reference.state_dict())  # a checkpoint's names are unchanged
    with torch.inference_mode():
        for shape in [(1, 1, 512), (2, 512), (1, 9, 512), (3, 5, 512), (1, 40, 512)]:  # 40 rows: F.linear
            x = torch.randn(shape)
            assert torch.allclose(linear(x), reference(x), rtol=1e-5, atol=1e-5), shape


@needs_kernel
def test_training_keeps_f_linear_and_its_gradients():
    """dense_mm has no backward: a weight that needs gradients, with grad enabled, takes F.linear."""
    linear = _linear()
    linear.__class__, linear.native_rows = NativeLinear, EVERY_ROW
    x = torch.randn(2, 512)
    linear(x).square().sum().backward()
    want = 2 * (x @ linear.weight.detach().t()).t() @ x  # d/dW sum((x W^T)^2) = 2 (x W^T)^T x
    assert torch.allclose(linear.weight.grad, want, rtol=1e-4, atol=1e-3)


@needs_kernel
def test_compiled_code_calls_the_custom_op_without_graph_breaks():
    linear = _linear()
    linear.__class__, linear.native_rows = NativeLinear, EVERY_ROW
    linear.requires_grad_(False)
    compiled = torch.compile(linear, fullgraph=True)
    x = torch.randn(2, 512)
    assert torch.allclose(compiled(x), F.linear(x, linear.weight), rtol=1e-5, atol=1e-5)


@needs_kernel
def test_the_choice_is_measured_on_the_model_and_recorded_per_row_count(monkeypatch):
    monkeypatch.setattr(dense, "_choices", {})
    model = nn.Sequential(_linear(1024, 1024), nn.ReLU(), _linear(64, 64), _linear(1024, 1024, torch.float64))
    report = use_native_linears(model)
    big, small, double = model[0], model[2], model[3]
    assert type(big) is NativeLinear and type(small) is nn.Linear and type(double) is nn.Linear
    assert len(big.native_rows) == MAX_ROWS + 1 and big.native_rows[0] is False
    assert set(dense._choices) == {(1024, 1024, torch.float32)}
    winners = [rows for rows in dense.MEASURE_ROWS if big.native_rows[rows]]
    assert report == ({"[1024, 1024] float32": f"dense_mm at {', '.join(map(str, winners))} rows"} if winners else {})


@needs_kernel
def test_a_kernel_that_computes_wrong_is_never_chosen(monkeypatch):
    """The measured choice checks the product first: a kernel returning zeros (however fast) loses every row."""
    monkeypatch.setattr(dense, "_choices", {})
    monkeypatch.setattr(native, "dense_mm_eager", lambda x, weight: x.new_zeros(x.shape[0], weight.shape[0]))
    linear = _linear(1024, 1024)
    assert use_native_linears(linear) == {} and not any(linear.native_rows)


def test_without_a_compiler_every_linear_stays_torchs(monkeypatch, fresh_build):
    monkeypatch.setenv("CC", "false")  # a compiler that always fails
    why = native.dense_unavailable()
    assert why and ("failed" in why or "lacks" in why)
    model = nn.Sequential(_linear(1024, 1024))
    assert use_native_linears(model) == {} and type(model[0]) is nn.Linear
    assert not list(fresh_build.glob("*.partial"))


@pytest.mark.skipif(native._compiler() is None, reason="no C compiler on PATH")
def test_a_dense_build_that_computes_wrong_fails_its_self_test(monkeypatch, tmp_path, fresh_build):
    source = tmp_path / "dense_avx512.c"
    source.write_text("void loopcoder_dense_mm_f32(void) {}\nvoid loopcoder_dense_mm_bf16(void) {}\n")
    monkeypatch.setattr(native, "DENSE", dataclasses.replace(native.DENSE, source=source))
    monkeypatch.setattr(native, "_missing_cpu_flags", lambda wanted: [])
    why = native.dense_unavailable()
    assert "self-test" in why and "wrong products" in why, why
    assert not list(fresh_build.iterdir())


@needs_kernel
def test_the_plt_backend_loads_its_large_linears_as_native_ones(tmp_path):
    """`small` preset: its lm_head [4096, 256] is large enough; greedy output is unchanged on dense_mm."""
    from loopcoder.model.presets import init_random_checkpoint
    from loopcoder.runtime.backends import create_backend
    from loopcoder.runtime.params import GenerationParams
    from nano.tiny_tokenizer import save_test_tokenizer

    init_random_checkpoint(tmp_path / "model", "small", seed=0, tokenizer=save_test_tokenizer(tmp_path / "tokenizer"))
    backend = create_backend("plt", model_path=str(tmp_path / "model"), device="cpu")
    head = backend.model.lm_head
    assert type(head) is NativeLinear
    params = GenerationParams(max_new_tokens=12, temperature=0.0, speculative="off")
    generated = {}
    for name, rows in (("dense_mm", EVERY_ROW), ("F.linear", (False,) * (MAX_ROWS + 1))):
        head.native_rows = rows
        backend.session.reset()
        generated[name] = backend.session.generate(list(range(5, 40)), params, frozenset()).ids
    assert len(generated["F.linear"]) == 12 and generated["dense_mm"] == generated["F.linear"]


@pytest.mark.parametrize("library, unavailable", [("DENSE", "dense_unavailable"), ("INT8_VNNI", "int8_vnni_unavailable")])
def test_each_kernel_builds_and_passes_its_self_test_where_the_cpu_has_its_instructions(library, unavailable):
    """Where nothing excuses it (the CPU has the instructions, a compiler is there), an unavailable kernel is a
    broken build: fail here rather than let its tests skip and decoding fall back to torch unnoticed."""
    spec = getattr(native, library)
    if native._missing_cpu_flags(spec.cpu_flags) or native._compiler() is None:
        pytest.skip(f"this machine cannot build {spec.source.name}: {getattr(native, unavailable)()}")
    assert getattr(native, unavailable)() == ""


@needs_kernel
def test_a_native_linear_moved_off_the_cpu_hands_its_products_to_torch():
    """A model loaded on the CPU and moved (`.to("meta")` stands in for a GPU here): never a CPU pointer to
    device memory."""
    linear = _linear()
    linear.__class__, linear.native_rows = NativeLinear, EVERY_ROW
    moved = linear.to("meta")
    with torch.inference_mode():
        assert moved(torch.randn(2, 512, device="meta")).shape == (2, 2048)
    with pytest.raises(ValueError, match="on meta"):
        native.dense_mm_eager(torch.randn(2, 512), moved.weight)
