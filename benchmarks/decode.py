"""Decode latency, prefill throughput and KV bytes: our PLT against Llama of the same width.

The PLT runs its 14 shared layers twice. Decoding a token with both loops as two
rows of one pass (docs/plt.md §4, cross-loop-parallel) reads every weight once, so a
step should cost about what a 14-layer Llama's does (the single-loop floor) and
well under a 28-layer one's (what running the loops one after the other costs).

Every model runs the same manual loop (forward one token with the cache,
argmax), on random weights built in memory. Decode steps and the bandwidth
probes are interleaved round-robin across the models, so load from other
processes on a shared machine hits all of them alike; each figure is a median.

    .venv/bin/python benchmarks/decode.py          # CPU, float32, 2 threads: 7B proportions at 1/4 width
    python benchmarks/decode.py --preset 7b-shape --device cuda --dtype bfloat16
    .venv/bin/python benchmarks/decode.py --compile    # adds "PLT compiled" (model/compiled.py) and its ratio to eager

With --compile the PLT also decodes through its compiled step (torch.compile: CUDA graphs on a
GPU, inductor's C++ kernels on the CPU) from a static copy of the same cache, in the same rounds;
its warm-up (compile) runs before the rounds and is reported, not timed in.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import as_loaded, cache_bytes, matvec_probe, median, module_bytes, seconds, weight_bytes  # noqa: E402
from loopcoder.model.compat import CACHE_KWARG  # noqa: E402 - the KV cache keyword of the installed transformers

# 7B proportions (head dim 128, 5 query heads per KV head, FFN/width 5.4, vocab/width 15) at 1/4 width.
SCALED = dict(hidden_size=1280, num_attention_heads=10, num_key_value_heads=2, head_dim=128,
              intermediate_size=6912, vocab_size=19200)
PRESET_NAMES = ("scaled", "7b-shape", "small", "tiny")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def plt_config(preset: str, dtype: torch.dtype):
    from loopcoder.model.presets import PRESETS, preset_config

    base = preset if preset in PRESETS else "7b-shape"
    extra = SCALED if preset == "scaled" else {}
    return preset_config(base, **extra, dtype=str(dtype).removeprefix("torch."))


def llama_config(plt, layers: int):
    """A Llama of the PLT's width, heads, FFN and vocab with `layers` layers."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=plt.vocab_size, hidden_size=plt.hidden_size, intermediate_size=plt.intermediate_size,
        num_hidden_layers=layers, num_attention_heads=plt.num_attention_heads,
        num_key_value_heads=plt.num_key_value_heads, head_dim=plt.head_dim, hidden_act="silu",
        max_position_embeddings=plt.max_position_embeddings, rms_norm_eps=plt.rms_norm_eps,
        rope_theta=plt.rope_theta, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
    )


def build(cls, config, device: str, dtype: torch.dtype, **kwargs):
    """Random weights straight on the device (no checkpoint on disk)."""
    with torch.device(device):
        return cls._from_config(config, dtype=dtype, **kwargs).eval()


def set_cross_loop(model, parallel: bool) -> None:
    """The PLT's decode-path switch: `IQuestPLTCoderModel.cross_loop_decode` (model/modeling_plt.py)."""
    if not hasattr(model.model, "cross_loop_decode"):
        raise SystemExit("model/modeling_plt.py has no `cross_loop_decode` switch on IQuestPLTCoderModel; "
                         "this benchmark needs it to time the sequential and the cross-loop-parallel decode")
    model.model.cross_loop_decode = parallel


@dataclass
class Decoder:
    """One model decoding from its own cache; `parallel` picks the PLT's decode path (None: not a PLT)."""

    name: str
    model: torch.nn.Module
    cache: object
    token: torch.Tensor  # [1, 1]
    bytes_per_step: int  # weight bytes one step reads
    parallel: bool | None = None
    compiled: object = None  # a CompiledDecode: the step runs it on `cache` (a static one)
    samples: list[float] = field(default_factory=list)

    def step(self) -> None:
        if self.parallel is not None:
            set_cross_loop(self.model, self.parallel)
        if self.compiled is not None:
            self.token = self.compiled(self.token, self.cache).argmax(-1, keepdim=True)
            return
        logits = self.model(input_ids=self.token, **{CACHE_KWARG: self.cache}, use_cache=True, logits_to_keep=1).logits
        self.token = logits[:, -1].argmax(-1, keepdim=True)


@dataclass
class Probe:
    """A matmul over a large weight, timed in the same rounds as the decoders."""

    name: str
    fn: object
    nbytes: int
    samples: list[float] = field(default_factory=list)

    def step(self) -> None:
        self.fn()

    @property
    def bandwidth(self) -> float:
        return self.nbytes / median(self.samples)


def prefill(model, ids: torch.Tensor, new_cache, device: str) -> tuple[float, object]:
    """Seconds to run `ids` [1, n] into a fresh cache, and the cache."""
    cache = new_cache()
    return seconds(lambda: model(input_ids=ids, **{CACHE_KWARG: cache}, use_cache=True, logits_to_keep=1), device), cache


VERIFY_DRAFT = 8  # drafted tokens checked after the pending one


def verify_step(plt, cache, draft: torch.Tensor, pipelined: bool):
    """A step that checks `draft` [1, 1 + k] (the pending token and k drafts) on a copy of `cache`, then
    rolls it back: a pipelined pass (loop 0 over all, loop 1 over the first) or the chunk path."""
    cache = copy.deepcopy(cache)
    held = cache.get_seq_length()

    def step() -> None:
        set_cross_loop(plt, True)
        if pipelined:
            plt.pipelined_forward(draft, cache)
        else:
            plt(input_ids=draft, **{CACHE_KWARG: cache}, use_cache=True)
        cache.crop(held)
    return step


def run(args) -> dict:
    from transformers import DynamicCache, LlamaForCausalLM

    import loopcoder.model as model  # noqa: F401  registers the PLT
    from loopcoder.model.modeling_plt import IQuestPLTCoderForCausalLM

    device, dtype = args.device, DTYPES[args.dtype]
    config = plt_config(args.preset, dtype)
    torch.manual_seed(0)
    plt = build(IQuestPLTCoderForCausalLM, config, device, dtype)
    llamas = {f"Llama-{n}": build(LlamaForCausalLM, llama_config(config, n), device, dtype,
                                  attn_implementation="sdpa")
              for n in (config.num_hidden_layers, 2 * config.num_hidden_layers)}
    models = {"PLT": (plt, plt.new_cache), **{name: (m, DynamicCache) for name, m in llamas.items()}}
    kernels = as_loaded(*(m for m, _ in models.values()), torch_kernels=args.torch_kernels)
    n = args.prompt
    ids = torch.randint(0, config.vocab_size, (1, 2 * n), device=device,
                        generator=torch.Generator(device=device).manual_seed(0))

    # Prefill: warm each model up, then time `repeats` fresh N-token prefills, round-robin.
    for m, new_cache in models.values():
        prefill(m, ids[:, :16], new_cache, device)
    prefill_s = {name: [] for name in models}
    caches_n = {}
    for _ in range(args.prefill_repeats):
        for name, (m, new_cache) in models.items():
            elapsed, caches_n[name] = prefill(m, ids[:, :n], new_cache, device)
            prefill_s[name].append(elapsed)
    caches_2n = {name: prefill(m, ids, new_cache, device)[1] for name, (m, new_cache) in models.items()}
    kv = {}
    for name in models:  # a fresh N- and 2N-token cache: the slope is per token, the rest is constant
        small, large = cache_bytes(caches_n[name]), cache_bytes(caches_2n[name])
        kv[name] = {"per_token": (large - small) / n, "constant": small - (large - small)}
    del caches_n

    # Decode: steps and bandwidth probes round-robin from the 2N-token caches.
    loops = config.plt_num_loops
    start = ids[:, -1:]
    plt_bytes = weight_bytes(plt)
    decoders = [
        Decoder("PLT parallel", plt, caches_2n["PLT"], start, plt_bytes, parallel=True),
        Decoder("PLT sequential", plt, copy.deepcopy(caches_2n["PLT"]), start,
                plt_bytes + (loops - 1) * module_bytes(plt.model.layers), parallel=False),
        *(Decoder(name, m, caches_2n[name], start, weight_bytes(m)) for name, m in llamas.items()),
    ]
    warmup_s = None
    if args.compile:
        compiled, warmup_s = compiled_decoder(plt, ids, args.warmup + args.steps, start)
        decoders.insert(1, compiled)
    probes = [Probe(f"matmul {rows} row", *matvec_probe(device, dtype, args.probe_mb, rows, not args.torch_kernels))
              for rows in (1, 2)]
    if loops == 2:  # checking a prompt-lookup draft: pipelined (one pass) and loop after loop (two)
        probes += [Probe(f"verify {VERIFY_DRAFT} {how}", verify_step(plt, caches_2n["PLT"], ids[:, :VERIFY_DRAFT + 1],
                                                                     how == "pipelined"), 0)
                   for how in ("pipelined", "loop after loop")]
    for round_ in range(args.warmup + args.steps):
        for item in (*decoders, *probes):
            elapsed = seconds(item.step, device)
            if round_ >= args.warmup:
                item.samples.append(elapsed)
    if args.profile:
        profile_decoders(decoders, args.profile, device)
    return report(args, config, decoders, probes, prefill_s, kv, warmup_s, kernels)


def compiled_decoder(plt, ids: torch.Tensor, steps: int, start: torch.Tensor) -> tuple[Decoder, float]:
    """"PLT compiled": a static cache holding `ids` (the same 2N tokens), warmed up (compiled, and
    on CUDA its graph captured) on a copy; and the warm-up's seconds."""
    from loopcoder.model.compiled import CUDA_WARMUP_CALLS

    compiled = plt.enable_compiled_decode()
    set_cross_loop(plt, True)
    cache = plt.new_cache(max_length=ids.shape[1] + steps + CUDA_WARMUP_CALLS + 1)
    plt(input_ids=ids, **{CACHE_KWARG: cache}, use_cache=True, logits_to_keep=1)
    spare = copy.deepcopy(cache)
    for _ in range(CUDA_WARMUP_CALLS):
        compiled(start, spare)
    del spare
    return Decoder("PLT compiled", plt, cache, start, weight_bytes(plt), parallel=True, compiled=compiled), \
        compiled.warmup_seconds


def profile_decoders(decoders: list[Decoder], steps: int, device: str) -> None:
    """torch.profiler's op table for `steps` decode steps of each decoder: where a step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    for d in decoders:
        with profile(activities=activities) as prof:
            for _ in range(steps):
                d.step()
        print(f"\n=== profile: {d.name}, {steps} decode steps ===")
        print(prof.key_averages().table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=14))


def report(args, config, decoders, probes, prefill_s, kv, warmup_s: float | None = None,
           kernels: dict | None = None) -> dict:
    """Ratios from medians (the figures judged against the targets) and, alongside, from the fastest
    sample: on a shared machine the minimum is the uncontended cost, the median what a user sees."""
    single, double = (f"Llama-{n}" for n in (config.num_hidden_layers, 2 * config.num_hidden_layers))
    prefill_tps = {name: args.prompt / median(samples) for name, samples in prefill_s.items()}
    by = {stat: ({d.name: fn(d.samples) for d in decoders}, [fn(p.samples) for p in probes]) for stat, fn in
          (("median", median), ("min", min))}
    peak = args.peak_bandwidth * 1e9 if args.peak_bandwidth else None

    def decode_ratios(latency: dict, probe: list[float]) -> list[tuple[str, float]]:
        par, bandwidth = latency["PLT parallel"], probes[0].nbytes / probe[0]
        ratios = [(f"decode PLT-parallel / {single}", par / latency[single]),
                  (f"decode PLT-parallel / {double}", par / latency[double]),
                  ("decode PLT-sequential / PLT-parallel", latency["PLT sequential"] / par),
                  ("decode PLT-parallel / matvec bandwidth", decoders[0].bytes_per_step / par / bandwidth),
                  ("matmul 2 rows / 1 row (time)", probe[1] / probe[0])]
        for probe_item, seconds_ in zip(probes[2:], probe[2:]):
            ratios.append((f"{probe_item.name} / decode PLT-parallel", seconds_ / par))
        if "PLT compiled" in latency:
            ratios += [("decode PLT-compiled / PLT-parallel (eager)", latency["PLT compiled"] / par)]
        if peak:
            ratios += [("matvec bandwidth / nominal peak", bandwidth / peak),
                       ("decode PLT-parallel tokens/s / nominal-peak ceiling", decoders[0].bytes_per_step / par / peak)]
        return ratios

    bandwidth = probes[0].bandwidth
    latency = by["median"][0]
    rows = []
    for d in decoders:
        family = "PLT" if d.parallel is not None else d.name
        rows.append({
            "model": d.name,
            "decode_ms": latency[d.name] * 1e3,
            "decode_ms_min": min(d.samples) * 1e3,
            "decode_tok_s": 1 / latency[d.name],
            "bytes_per_step": d.bytes_per_step,
            "weight_mb_per_step": d.bytes_per_step / 2**20,
            "ceiling_tok_s": bandwidth / d.bytes_per_step,
            "bandwidth_fraction": d.bytes_per_step / latency[d.name] / bandwidth,
            "prefill_tok_s": prefill_tps[family],
            "kv_bytes_per_token": kv[family]["per_token"],
            "kv_constant_bytes": kv[family]["constant"],
        })
    ratios = dict(decode_ratios(*by["median"]))
    ratios[f"prefill PLT / {double} (tokens/s)"] = prefill_tps["PLT"] / prefill_tps[double]
    ratios[f"KV bytes/token PLT - {single}"] = kv["PLT"]["per_token"] - kv[single]["per_token"]
    bounds = {f"decode PLT-parallel / {single}": (1.10, "max"), f"decode PLT-parallel / {double}": (0.55, "max"),
              "decode PLT-parallel / matvec bandwidth": (0.75, "min"),
              f"prefill PLT / {double} (tokens/s)": (0.90, "min"), f"KV bytes/token PLT - {single}": (0.0, "max")}
    targets = {name: {"bound": bound, "kind": kind,
                      "met": ratios[name] <= bound if kind == "max" else ratios[name] >= bound}
               for name, (bound, kind) in bounds.items()}
    return {
        "benchmark": "decode", "preset": args.preset, "device": args.device, "dtype": args.dtype,
        "device_name": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "shape": {k: getattr(config, k) for k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                                                   "intermediate_size", "num_hidden_layers", "vocab_size", "plt_num_loops")},
        "prompt": args.prompt, "steps": args.steps, "warmup": args.warmup, "prefill_repeats": args.prefill_repeats,
        "matvec_bytes_per_s": bandwidth, "matvec_2row_bytes_per_s": probes[1].bandwidth, "peak_bytes_per_s": peak,
        "load_average": list(os.getloadavg()), "compile_warmup_s": warmup_s,
        "kernels": "torch" if args.torch_kernels else (kernels or "torch (dense_mm won nowhere or is unavailable)"),
        "models": rows, "ratios": ratios, "ratios_from_min": dict(decode_ratios(*by["min"])), "targets": targets,
    }


def print_tables(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title=f"decode @ {result['prompt'] * 2} tokens of context, prefill {result['prompt']} tokens "
                        f"({result['preset']}, {result['device']} {result['device_name']}, {result['dtype']}, {result['threads']} threads, "
                        f"load {result['load_average'][0]:.1f})")
    for column in ("model", "ms/token", "fastest", "tok/s", "weights/step", "BW ceiling tok/s", "% matvec BW",
                   "prefill tok/s", "KV B/token", "KV constant"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in result["models"]:
        table.add_row(r["model"], f"{r['decode_ms']:.2f}", f"{r['decode_ms_min']:.2f}", f"{r['decode_tok_s']:.1f}", f"{r['weight_mb_per_step']:.0f} MiB",
                      f"{r['ceiling_tok_s']:.1f}",
                      f"{100 * r['bandwidth_fraction']:.0f}%", f"{r['prefill_tok_s']:.0f}",
                      f"{r['kv_bytes_per_token']:.0f}", f"{r['kv_constant_bytes'] / 2**20:.2f} MiB")
    console.print(table)
    ratios = Table(title=f"ratios (matvec bandwidth {result['matvec_bytes_per_s'] / 1e9:.1f} GB/s, "
                         f"2-row {result['matvec_2row_bytes_per_s'] / 1e9:.1f} GB/s; load {result['load_average'][0]:.1f})")
    for column in ("ratio", "median", "target", "met", "from fastest steps"):
        ratios.add_column(column, justify="left" if column == "ratio" else "right")
    for name, value in result["ratios"].items():
        target = result["targets"].get(name)
        bound = f"{'<=' if target['kind'] == 'max' else '>='} {target['bound']}" if target else ""
        met = ("yes" if target["met"] else "NO") if target else ""
        best = result["ratios_from_min"].get(name)
        ratios.add_row(name, f"{value:.3f}", bound, met, "" if best is None else f"{best:.3f}")
    console.print(ratios)
    console.print(f"dense kernels: {result['kernels']}")
    if result["compile_warmup_s"] is not None:
        console.print(f"compiled decode warm-up (compile{', CUDA graph capture' if result['device'].startswith('cuda') else ''}): "
                      f"{result['compile_warmup_s']:.1f}s, not timed in")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=PRESET_NAMES, default="scaled",
                        help="model shapes: scaled = the 7B's proportions at width 1280 (default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--prompt", type=int, help="N: prefill N tokens (KV from N and 2N); default 256 CPU, 2048 CUDA")
    parser.add_argument("--steps", type=int, help="timed decode steps per model; default 16 CPU, 64 CUDA")
    parser.add_argument("--warmup", type=int, default=3, help="untimed decode steps per model first")
    parser.add_argument("--prefill-repeats", type=int, help="timed N-token prefills per model; default 2 CPU, 5 CUDA")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="after timing, print torch.profiler's op table for STEPS decode steps of each model")
    parser.add_argument("--peak-bandwidth", type=float, metavar="GB/S",
                        help="nominal memory bandwidth (e.g. 4800 for an H200's HBM): adds the tokens/s ceiling")
    parser.add_argument("--probe-mb", type=int, help="weight size of the bandwidth probe; default 512 CPU, 4096 CUDA")
    parser.add_argument("--torch-kernels", action="store_true",
                        help="every linear through F.linear (default: as the backends do, model/dense.py's measured choice)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the PLT's compiled decode step (CUDA graphs on CUDA), from a static cache")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch sees no CUDA device; use --device cpu")
    if args.preset == "7b-shape" and not cuda:
        parser.error("--preset 7b-shape needs a GPU (about 60 GB of weights for the three models); "
                     "run it with --device cuda --dtype bfloat16, or use --preset scaled on CPU")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.prompt = args.prompt or (2048 if cuda else 256)
    args.steps = args.steps or (64 if cuda else 16)
    args.prefill_repeats = args.prefill_repeats or (5 if cuda else 2)
    args.probe_mb = args.probe_mb or (4096 if cuda else 512)
    if min(args.prompt, args.steps, args.prefill_repeats) < 1 or args.warmup < 0:
        parser.error("--prompt, --steps and --prefill-repeats must be >= 1, --warmup >= 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if not args.device.startswith("cuda"):
        torch.set_num_threads(args.threads)
    with torch.inference_mode():
        result = run(args)
    print_tables(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
