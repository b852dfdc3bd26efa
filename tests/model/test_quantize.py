"""Issue 21: weight-only int8/int4, its kernels, its checkpoints and its quality."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from loopcoder.model import CheckpointError, IQuestPLTCoderConfig, IQuestPLTCoderForCausalLM
from loopcoder.model import quantize
from loopcoder.model.quantize import (KERNELS, LAYOUTS, QuantizedLinear, QuantSpec, dequantize, kernel_report,
                            quantize_model, quantize_weight)
from loopcoder.model.quantized_loading import write_quantized

from .conftest import tiny_model

IDS = torch.randint(3, 97, (1, 30), generator=torch.Generator().manual_seed(0))
INT4 = {"method": "int4", "group_size": 32}
LOOPCODER = str(Path(sys.executable).parent / "loopcoder")


def _logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 40), groups=st.integers(1, 4), method=st.sampled_from(["int8", "int4"]),
       scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_dequantized_weight_is_within_half_a_step(rows, groups, method, scale, seed):
    weight = torch.randn(rows, 32 * groups, generator=torch.Generator().manual_seed(seed)) * scale
    spec = QuantSpec.parse({"method": method, "group_size": 32})
    stored = quantize_weight(weight, spec)
    error = (dequantize(stored) - weight).abs()
    if method == "int8":
        step = stored["weight_scale"][:, None]  # [N, 1]
    else:
        step = stored["weight_scale"].repeat_interleave(32, dim=1)  # [N, K]
    assert bool((error <= step * 0.5001 + 1e-6 * scale).all())


# [N, K]: a row count off torch's CPU int4 pack blocks (64), the 7B's FFN input at 1/32 (864: not a
# power of two), and a tall lm_head-like one; each split into several dequantization blocks with a tail
KERNEL_SHAPES = ((96, 256), (320, 864), (2432, 160))


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_kernel_multiplies_by_the_dequantized_weight(kernel, dtype, shape, monkeypatch):
    layout = LAYOUTS[kernel.layout]
    if "cpu" not in layout.devices:
        pytest.skip(f"{kernel.name} runs on {layout.devices} only")
    out_features, in_features = shape
    if not kernel.supports(out_features, in_features):
        pytest.skip(f"{kernel.name} does not take a [{out_features}, {in_features}] weight")
    monkeypatch.setattr(quantize, "DEQUANT_BLOCK_BYTES", in_features * 4 * 96)  # blocks of 96 rows (64 packed)
    generator = torch.Generator().manual_seed(1)
    stored = quantize_weight(torch.randn(out_features, in_features, generator=generator), QuantSpec(layout.method, 32))
    try:
        tensors = layout.prepare(stored, dtype, torch.device("cpu"), 32)
    except NotImplementedError as why:  # e.g. int8_vnni_mm: 16-bit activations only, and a CPU with VNNI
        pytest.skip(f"{layout.name} does not hold weights for {dtype} activations here: {why}")
    for rows in (1, 2, quantize.DECODE_ROWS, quantize.DECODE_ROWS + 1, 34, 64):  # decode, prefill, a pipelined pass
        x = torch.randn(rows, in_features, generator=generator).to(dtype)
        got = kernel.run(x, *tensors, 32)
        want = F.linear(x.float(), dequantize(stored))
        assert got.shape == want.shape
        error = ((got.float() - want).norm() / want.norm()).item()
        assert error < (1e-5 if dtype == torch.float32 else 0.01), f"{rows} rows: relative error {error:.2e}"


def test_the_kernel_choice_leaves_out_a_kernel_that_computes_something_else(monkeypatch):
    wrong = quantize.Kernel("int8 transposed scales", "int8", lambda x, w, s, z, g: torch._weight_int8pack_mm(x, w, s.flip(0)))
    monkeypatch.setattr(quantize, "KERNELS", (wrong, *quantize.KERNELS))
    monkeypatch.setitem(quantize.KERNELS_BY_NAME, wrong.name, wrong)
    quantize.choose_kernels.cache_clear()
    choice = quantize.choose_kernels("int8", 64, 128, 32, torch.float32, "cpu")
    quantize.choose_kernels.cache_clear()
    assert wrong.name not in {choice.decode, *(name for _, name in choice.prefill)}
    assert all(name != wrong.name for name, _ in choice.seconds)


def test_many_rows_go_to_the_kernel_whose_fitted_cost_is_lowest_at_that_row_count():
    """A packed kernel costs 1 per row; dequantize-then-GEMM 40 at 16 rows, 52 at 128: equal at ~42.9 rows."""
    low, high = quantize.MEASURE_ROWS["prefill"]
    seconds = {("int8pack_mm", low): low, ("int8pack_mm", high): high,
               ("int8 dequant+linear", low): 40, ("int8 dequant+linear", high): 40 + 12 * (high - low) / 112}
    steps = quantize._prefill_steps(["int8pack_mm", "int8 dequant+linear"], seconds)
    assert steps == ((42, "int8pack_mm"), (quantize.PREFILL_ROWS_FITTED, "int8 dequant+linear"))
    choice = quantize.KernelChoice("int8", "int8pack_mm", steps, seconds)
    assert [choice.kernel_for(n) for n in (1, quantize.DECODE_ROWS, 42, 43, 10**6)] == \
        ["int8pack_mm"] * 3 + ["int8 dequant+linear"] * 2
    assert choice.describe() == "int8pack_mm / int8pack_mm up to 42 rows, then int8 dequant+linear"


@pytest.mark.parametrize("quantize", ["int8", INT4], ids=["int8", "int4"])
def test_quantized_model_follows_the_dense_one_and_reports_its_kernels(quantize):
    dense = _logits(tiny_model(1))
    model = quantize_model(tiny_model(1), quantize)
    assert model.config.plt_quantization["method"] == QuantSpec.parse(quantize).method
    layers = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert len(layers) == 2 * 7 + 1  # every linear of the 2 shared layers, and lm_head
    assert kernel_report(model)
    got = _logits(model)
    agree = (got.argmax(-1) == dense.argmax(-1)).float().mean().item()
    assert agree >= (0.9 if quantize == "int8" else 0.6)
    assert (got - dense).abs().max() < (0.2 if quantize == "int8" else 1.5) * dense.abs().max()


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("dense")
    tiny_model(2).save_pretrained(path)
    return path


@pytest.mark.parametrize("quantize", ["int8", INT4], ids=["int8", "int4"])
def test_quantize_while_loading_equals_quantized_checkpoint_equals_in_memory(dense_dir, tmp_path, quantize):
    in_memory = _logits(quantize_model(tiny_model(2), quantize))
    while_loading = AutoModelForCausalLM.from_pretrained(dense_dir, quantize=quantize, dtype=torch.float32)
    summary = write_quantized(dense_dir, tmp_path / "q", quantize)
    stored = json.loads((tmp_path / "q" / "config.json").read_text())["plt_quantization"]
    assert stored["method"] == summary["method"] == QuantSpec.parse(quantize).method
    from_checkpoint = AutoModelForCausalLM.from_pretrained(tmp_path / "q", dtype=torch.float32)
    assert type(from_checkpoint) is IQuestPLTCoderForCausalLM
    torch.testing.assert_close(_logits(while_loading), in_memory, rtol=0, atol=0)
    torch.testing.assert_close(_logits(from_checkpoint), in_memory, rtol=0, atol=0)
    assert not any(p.is_meta for p in from_checkpoint.parameters())


def test_sharded_checkpoint_quantizes_shard_by_shard(tmp_path):
    from loopcoder.model.presets import init_random_checkpoint

    init_random_checkpoint(tmp_path / "dense", "tiny", shard_bytes=64 * 1024)
    shards = sorted(p.name for p in (tmp_path / "dense").glob("*.safetensors"))
    assert len(shards) > 1
    write_quantized(tmp_path / "dense", tmp_path / "q", "int8")
    assert sorted(p.name for p in (tmp_path / "q").glob("*.safetensors")) == shards
    index = json.loads((tmp_path / "q" / "model.safetensors.index.json").read_text())["weight_map"]
    assert index["model.layers.0.mlp.down_proj.weight_scale"] == index["model.layers.0.mlp.down_proj.weight"]
    ids = torch.randint(0, 1024, (1, 12))
    direct = AutoModelForCausalLM.from_pretrained(tmp_path / "dense", quantize="int8", dtype=torch.float32)
    stored = AutoModelForCausalLM.from_pretrained(tmp_path / "q", dtype=torch.float32)
    torch.testing.assert_close(_logits(direct, ids), _logits(stored, ids), rtol=0, atol=0)


def _mapped_bytes(directory: Path) -> int:
    """Resident bytes of this process's memory maps of files under `directory` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and "-" in fields[0] and ":" in fields[3]:  # a mapping's header line
            inside = len(fields) > 5 and fields[5].startswith(str(directory))
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").is_file(), reason="reads Linux's /proc/self/smaps")
@pytest.mark.parametrize("stored", [False, True], ids=["quantize-while-loading", "quantized-checkpoint"])
def test_loading_leaves_no_checkpoint_page_in_memory(tmp_path, stored):
    """The peak must be the quantized size: a tensor viewing a memory-mapped shard keeps every page read
    from it resident (counted in the process's RSS) for as long as the model lives. In bf16, as the 7B
    ships: the embedding, norms and gate need no conversion, so nothing else copies them."""
    path = tmp_path / "dense"
    tiny_model(2).to(torch.bfloat16).save_pretrained(path)
    if stored:
        write_quantized(path, tmp_path / "q", "int8")
        path = tmp_path / "q"
    model = AutoModelForCausalLM.from_pretrained(path, quantize=None if stored else "int8", dtype=torch.bfloat16)
    assert _mapped_bytes(path) == 0
    assert model.model.embed_tokens.weight.untyped_storage().nbytes() == model.model.embed_tokens.weight.nbytes


PEAK_OF_QUANTIZING = """
import sys, torch
from loopcoder.model.quantize import QuantSpec, quantize_weight
def peak():
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
torch.set_num_threads(1)
weight = torch.empty(65536, 4096, dtype=torch.bfloat16).normal_()  # 256M weights: the allocator's spread stays small
before = peak()
stored = quantize_weight(weight, QuantSpec(sys.argv[1], 128))
print((peak() - before) / stored["weight"].nbytes)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's VmHWM")
@pytest.mark.parametrize("method", ["int8", "int4"])
def test_quantizing_a_weight_needs_little_more_memory_than_its_result(method):
    """The 7B's lm_head is quantized last, on top of everything else loaded: its blocks are written into the
    result in place (a list of blocks concatenated at the end raised a 7B's int8 load peak by ~0.5 GB).
    In a fresh process, so the peak is this call's."""
    done = subprocess.run([sys.executable, "-c", PEAK_OF_QUANTIZING, method], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ratio = float(done.stdout)
    # measured: int8 1.13-1.29x, int4 1.41-1.56x (a float32 block and its codes on top); before, 2.4-3.5x
    # and 3.2-3.6x (at 64M weights the allocator's spread reached 0.9x of the result)
    assert ratio < 1.9, f"peak {ratio:.2f}x the quantized weight"


def test_quantized_checkpoint_errors_name_the_problem(dense_dir, tmp_path):
    write_quantized(dense_dir, tmp_path / "q", "int8")
    with pytest.raises(CheckpointError, match="already quantized to int8; quantize the dense checkpoint to int4"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "q", quantize="int4")
    with pytest.raises(CheckpointError, match="already quantized"):
        write_quantized(tmp_path / "q", tmp_path / "q2", "int4")
    with pytest.raises(CheckpointError, match="not empty"):
        write_quantized(dense_dir, tmp_path / "q", "int8")
    from safetensors.torch import load_file, save_file

    tensors = load_file(tmp_path / "q" / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight_scale"]
    save_file(tensors, tmp_path / "q" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing tensors: model\.layers\.1\.mlp\.up_proj\.weight_scale"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    with pytest.raises(ValueError, match="`plt_quantization`: quantization method must be one of int8, int4"):
        IQuestPLTCoderConfig(plt_quantization="int3")
    with pytest.raises(ValueError, match="group_size must be a power of two"):
        QuantSpec.parse({"method": "int4", "group_size": 48})
    with pytest.raises(ValueError, match="write a quantized checkpoint from the dense one with `loopcoder model quantize"):
        quantize_model(tiny_model(), "int8").save_pretrained(tmp_path / "saved")
    with pytest.raises(ValueError, match="divisible by the group size"):
        quantize_model(tiny_model(), {"method": "int4", "group_size": 128})


def test_cli_quantize_then_generate_and_info(dense_dir, tmp_path):
    out = subprocess.run([LOOPCODER, "model", "quantize", str(dense_dir), str(tmp_path / "q4"), "--method", "int4",
                          "--group-size", "32"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "int4 (group 32)" in out.stdout
    info = subprocess.run([LOOPCODER, "model", "info", str(tmp_path / "q4")], capture_output=True, text=True, timeout=300)
    assert info.returncode == 0, info.stderr
    assert "all match the config" in info.stdout and "linears weight-only int4 (groups of 32)" in info.stdout
    assert f"({sum(p.numel() for p in tiny_model(2).parameters()):,})" in info.stdout  # the dense count
    bad = subprocess.run([LOOPCODER, "model", "quantize", str(dense_dir), str(tmp_path / "q5"), "--method", "int2"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "quantization method must be one of int8, int4" in bad.stderr
    assert "Traceback" not in bad.stderr


def _seven_b_proportions(**overrides) -> IQuestPLTCoderConfig:
    """The 7B's shape at 1/32 width: 14 layers, 5 query heads per KV head, FFN 5.4x, vocab 15x, window 64."""
    from loopcoder.model.presets import preset_config

    return preset_config("7b-shape", hidden_size=160, num_attention_heads=5, num_key_value_heads=1, head_dim=32,
                         intermediate_size=864, vocab_size=2400, **overrides)


def _unit_scale(model):
    """Weights of unit-scale activations (the 0.02 init gives near-uniform logits, where any noise flips a token)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0, 1.0 if "embed" in name else param.shape[1] ** -0.5)
            elif name.endswith("bias"):
                param.normal_()
    return model


def _greedy(model, prompt, steps):
    """Greedy ids [steps] from `prompt` [1, n]."""
    cache, ids = model.new_cache(), []
    with torch.no_grad():
        logits = model(prompt, past_key_values=cache, logits_to_keep=1).logits[:, -1]
        for _ in range(steps):
            ids.append(int(logits.argmax()))
            logits = model(torch.tensor([[ids[-1]]]), past_key_values=cache).logits[:, -1]
    return ids


def _agreement(model, prompt, reference):
    """Share of steps where `model`, fed the reference's tokens, picks the reference's next token."""
    cache = model.new_cache()
    with torch.no_grad():
        logits = model(prompt, past_key_values=cache, logits_to_keep=1).logits[:, -1]
        hits = 0
        for token in reference:
            hits += int(logits.argmax()) == token
            logits = model(torch.tensor([[token]]), past_key_values=cache).logits[:, -1]
    return hits / len(reference)


@pytest.fixture
def one_thread():
    """Small bf16 products on a shared 2-core machine: a second thread only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_on_a_random_7b_shaped_model_int8_is_as_close_to_bf16_as_float32_is(one_thread):
    """Random weights give small top-1 margins, so even float32 departs from bf16 on a few tokens (how
    many depends on the summation order: 3-4% seen); int8's quantization noise must cost about as much
    (5-7% seen; a broken int8 agrees on almost none). int4 is reported."""
    prompt = torch.randint(0, 2400, (1, 64), generator=torch.Generator().manual_seed(0))

    def build(dtype, quantize=None):
        model = _unit_scale(IQuestPLTCoderForCausalLM(_seven_b_proportions(dtype="bfloat16"))).to(dtype).eval()
        return quantize_model(model, quantize) if quantize else model

    reference = _greedy(build(torch.bfloat16), prompt, 256)
    rates = {"float32": _agreement(build(torch.float32), prompt, reference)}
    for method, group in (("int8", 128), ("int4", 32)):
        rates[method] = _agreement(build(torch.bfloat16, {"method": method, "group_size": group}), prompt, reference)
    print(f"top-1 agreement with bf16 over 256 greedy tokens: {rates}")
    assert rates["int8"] >= rates["float32"] - 0.08


def test_int8_greedy_agrees_with_bf16_on_99_percent_of_256_tokens_of_the_trained_nano(one_thread):
    from nano.tasks import generate_task
    from loopcoder.runtime.tokenizer import encode_chat, load_tokenizer

    path = Path(__file__).resolve().parents[2] / "checkpoints" / "loopcoder-nano"
    task = generate_task("heldout", 0)
    prompt = torch.tensor([encode_chat(load_tokenizer(path), [{"role": "user", "content": task.text}], None)])

    def load(quantize=None):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, quantize=quantize)

    reference = _greedy(load(), prompt, 256)
    rates = {method: _agreement(load(method), prompt, reference) for method in ("int8", "int4")}
    print(f"nano: top-1 agreement with bf16 over 256 greedy tokens: {rates}")
    assert rates["int8"] >= 0.99
    assert rates["int4"] >= 0.85


@pytest.mark.slow
def test_big_benchmark_runs_at_a_small_shape(tmp_path):
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "big.py"
    out = subprocess.run([sys.executable, str(script), "--scale", "8", "--layers", "1", "--prompt", "16", "--tokens", "3",
                          "--variants", "bf16,int8", "--probe-mb", "8", "--threads", "1", "--dir", str(tmp_path / "ckpt")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result["variants"]) == {"bf16", "int8"}
    int8 = result["variants"]["int8"]
    assert int8["weight_gb_per_token"]["one-pass"] < 0.6 * result["variants"]["bf16"]["weight_gb_per_token"]["one-pass"]
    assert int8["agreement_with_bf16"] is not None and int8["kernels"]
    assert 0 < int8["logit_error_vs_bf16"] < 0.5 and result["variants"]["bf16"]["logit_error_vs_bf16"] is None
    assert "decode int8 speedup over bf16" in result["ratios"]


def test_plt_backend_quantizes_from_the_config_key_and_hf_refuses():
    from loopcoder.agent.config import load_config
    from loopcoder.agent.session import make_backend
    from loopcoder.runtime.backends import BackendError, create_backend

    nano = Path(__file__).resolve().parents[2] / "checkpoints" / "loopcoder-nano"
    config = load_config(user_file=False, overrides=(f"backend.model={nano}", "backend.quantize=int8", "backend.device=cpu"))
    backend = make_backend(config)
    assert backend.model.dtype == torch.bfloat16  # the default activations of a quantized model
    assert sum(isinstance(m, QuantizedLinear) for m in backend.model.modules()) == 4 * 7 + 1
    with pytest.raises(BackendError, match="--quantize works with the plt backend only"):
        create_backend("hf", model_path=str(nano), quantize="int8")
    with pytest.raises(BackendError, match="quantization method must be one of int8, int4, got 'int3'"):
        create_backend("plt", model_path=str(nano), quantize="int3")
