"""The real 7B shape on this machine: bf16, int8 and int4 loaded from a random checkpoint on disk.

Writes a random `7b-shape` checkpoint once (15 GB, reused), then, each variant
in its own process (so its peak RSS is its own): loads it (int8/int4 quantize
while loading, shard by shard), prefills a random prompt, decodes tokens with
the one-pass (cross-loop-parallel) and the loop-after-loop decode from the
same prefilled cache, and times a same-dtype matvec (the bandwidth ceiling of
this machine for that weight format). int8/int4 are fed bf16's greedy tokens,
so their top-1 agreement with bf16 is reported too, and the relative distance
of their logits from bf16's (random weights have tiny top-1 margins: top-1
flips easily). With --compile each variant also decodes through the compiled
one-pass step (model/compiled.py: CUDA graphs on a GPU) from a static copy of
the cache; its warm-up is reported, not timed in.

    .venv/bin/python benchmarks/big.py                          # the 7B shape (needs ~16 GB free RAM for bf16)
    .venv/bin/python benchmarks/big.py --scale 8 --layers 2     # the same at 1/8 width, 2 layers: a quick check
    python benchmarks/big.py --device cuda --prompt 2048 --tokens 64
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import as_loaded, median, seconds, sync  # noqa: E402
from loopcoder.model.compat import CACHE_KWARG  # noqa: E402 - the KV cache keyword of the installed transformers

VARIANTS = ("bf16", "int8", "int4")
SCALES = (1, 2, 4, 8)  # divides the 8 KV heads: the 7B's proportions hold
TARGETS = {"decode int8 speedup over bf16": (2.0, "min"), "int8 peak RSS GB": (10.0, "max")}
ONE_PASS_TARGET = 0.7  # one-pass / loop-after-loop decode time, every variant


def shape_overrides(scale: int, layers: int) -> dict:
    """The 7B's fields divided by `scale` (head dim 128 and 5 query heads per KV head kept)."""
    return dict(hidden_size=5120 // scale, num_attention_heads=40 // scale, num_key_value_heads=8 // scale,
                intermediate_size=27648 // scale, vocab_size=76800 // scale, num_hidden_layers=layers)


def ensure_checkpoint(path: Path, scale: int, layers: int) -> None:
    """Write the random checkpoint unless a complete one (marker file) is there."""
    marker = path / ".complete"
    overrides = shape_overrides(scale, layers)
    if marker.is_file() and json.loads(marker.read_text()) == overrides:
        return
    from loopcoder.model.presets import init_random_checkpoint

    print(f"writing a random 7b-shape checkpoint (scale 1/{scale}, {layers} layers) to {path} ...", flush=True)
    start = time.perf_counter()
    init_random_checkpoint(path, "7b-shape", seed=0, overrides=overrides)
    marker.write_text(json.dumps(overrides))
    print(f"written in {time.perf_counter() - start:.0f}s", flush=True)


def peak_rss_bytes() -> int:
    """This process's peak resident size: VmHWM, which exec resets (ru_maxrss also keeps the peak of the
    process that forked this one: the parent's, e.g. after it wrote the checkpoint)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB; macOS: bytes, close enough


def rss_split_bytes() -> dict[str, int]:
    """The resident size now, anonymous (the process's own memory) and file-backed (mapped checkpoint
    pages, which the kernel may drop and reread): {"anon": bytes, "file": bytes}; {} off Linux."""
    fields = {"RssAnon": "anon", "RssFile": "file"}
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    return {fields[k]: int(v.split()[0]) * 1024 for k, _, v in (l.partition(":") for l in lines) if k in fields}


def weight_bytes_read(model, loops_read: int = 1) -> int:
    """Bytes of weights one decode step reads: every tensor but the embedding, the layers `loops_read` times."""
    def size(module, skip=()):
        tensors = [t for n, t in [*module.named_parameters(), *module.named_buffers()] if not n.startswith(skip)]
        return sum(t.numel() * t.element_size() for t in tensors)

    layers = size(model.model.layers)
    return size(model, skip=("model.embed_tokens.",)) + (loops_read - 1) * layers


def probe(variant: str, device: str, megabytes: int, torch_kernels: bool):
    """A 1-row product with a weight of about `megabytes` in the variant's format -> (fn, weight bytes);
    bf16 loaded as the model's linears are (`as_loaded`: F.linear with `torch_kernels`)."""
    from loopcoder.model.quantize import QuantizedLinear, QuantSpec, quantize_weight

    cols = 8192
    bits = {"bf16": 16, "int8": 8, "int4": 4}[variant]
    rows = megabytes * 2**20 * 8 // (cols * bits)
    weight = torch.randn(rows, cols, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    x = torch.randn(1, cols, dtype=torch.bfloat16, device=device)
    if variant == "bf16":
        linear = torch.nn.Linear(cols, rows, bias=False, device="meta")
        linear.weight = torch.nn.Parameter(weight.to(device), requires_grad=False)
        as_loaded(linear, torch_kernels=torch_kernels)
        return (lambda: linear(x)), weight.numel() * weight.element_size()
    layer = QuantizedLinear(cols, rows, QuantSpec(variant))
    layer.load_stored(quantize_weight(weight, layer.spec), torch.bfloat16, device)
    del weight
    held = sum(t.numel() * t.element_size() for t in (layer.qweight, layer.qscale, layer.qzero))
    return (lambda: layer(x)), held


def child(args) -> dict:
    """One variant, in this process: load, prefill, decode both ways, probe."""
    import loopcoder.model as model  # noqa: F401  registers the PLT
    from transformers import AutoModelForCausalLM

    from loopcoder.model.quantize import kernel_report

    device = args.device
    start = time.perf_counter()
    kwargs = {"dtype": torch.bfloat16, **({} if device == "cpu" else {"device_map": device})}
    plt = AutoModelForCausalLM.from_pretrained(args.dir, **kwargs, **({} if args.child == "bf16" else {"quantize": args.child}))
    dense_kernels = as_loaded(plt, torch_kernels=args.torch_kernels)
    sync(device)
    load_s, rss_loaded = time.perf_counter() - start, peak_rss_bytes()
    config = plt.config
    prompt = torch.randint(0, config.vocab_size, (1, args.prompt), generator=torch.Generator().manual_seed(0)).to(device)
    reference = json.loads(args.reference) if args.reference else None
    with torch.inference_mode():
        plt(prompt[:, :8], **{CACHE_KWARG: plt.new_cache()}, logits_to_keep=1)  # warm-up
        cache = plt.new_cache(max_length=args.prompt + args.tokens + 8 if args.compile else None)
        prefill_s = seconds(lambda: plt(prompt, **{CACHE_KWARG: cache}, logits_to_keep=1), device)
        first = plt(prompt[:, -1:], **{CACHE_KWARG: copy.deepcopy(cache)}, logits_to_keep=1).logits[0, -1]
        decode, tokens, hits, kept = {}, [], 0, []
        paths = {"one-pass": eager_step(plt, True), "loop-after-loop": eager_step(plt, False)}
        if args.compile:
            paths["compiled"], warmup_s = compiled_step(plt, cache, prompt[:, -1:])
        for path, step_fn in paths.items():
            state, logits, samples = copy.deepcopy(cache), first, []
            for step in range(args.tokens):
                own = int(logits.argmax())
                if path == "one-pass":
                    tokens.append(own)
                    kept.append(logits.float().cpu())
                    hits += reference is not None and own == reference[step]
                token = reference[step] if reference else tokens[step]
                ids = torch.tensor([[token]], device=device)
                holder = {}
                samples.append(seconds(lambda: holder.update(out=step_fn(ids, state)), device))
                logits = holder["out"]
            decode[path] = median(samples[1:] or samples)
        rss_peak, rss_split = peak_rss_bytes(), rss_split_bytes()  # before the probe's own weight
        logit_error = compare_logits(torch.stack(kept), args.logits, save=reference is None)
        fn, probe_bytes = probe(args.child, device, args.probe_mb, args.torch_kernels)
        probe_s = median([seconds(fn, device) for _ in range(9)])
    read = {"one-pass": weight_bytes_read(plt), "loop-after-loop": weight_bytes_read(plt, config.plt_num_loops)}
    if args.compile:
        read["compiled"] = read["one-pass"]
    bandwidth = probe_bytes / probe_s
    return {
        "variant": args.child, "load_s": load_s, "rss_after_load_gb": rss_loaded / 1e9, "peak_rss_gb": rss_peak / 1e9,
        "rss_after_decode_gb": {k: v / 1e9 for k, v in rss_split.items()},
        "gpu_peak_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.startswith("cuda") else None,
        "prefill_tok_s": args.prompt / prefill_s,
        "decode_ms": {k: v * 1e3 for k, v in decode.items()},
        "weight_gb_per_token": {k: v / 1e9 for k, v in read.items()},
        "matvec_gb_s": bandwidth / 1e9,
        "bandwidth_fraction": {k: read[k] / decode[k] / bandwidth for k in decode},
        "tokens": tokens, "agreement_with_bf16": hits / len(reference) if reference else None,
        "logit_error_vs_bf16": logit_error,
        "kernels": {**kernel_report(plt), **dense_kernels}, "compile_warmup_s": warmup_s if args.compile else None,
    }


def compare_logits(logits: torch.Tensor, path: str | None, save: bool) -> float | None:
    """The reference run saves its one-pass logits [steps, V] to `path`; a later run returns the relative
    distance of its own (fed the same tokens) from them, each step's logits centred (softmax ignores a shift).
    Top-1 agreement alone misleads on random weights, whose top-1 margins are tiny."""
    if path is None:
        return None
    centred = logits - logits.mean(-1, keepdim=True)
    if save:
        torch.save(centred, path)
        return None
    reference = torch.load(path)
    return ((centred - reference).norm() / reference.norm()).item()


def eager_step(plt, one_pass: bool):
    """(ids [1, 1], cache) -> the logits [V] of the eager forward, one-pass or loop after loop."""
    def step(ids, state):
        plt.model.cross_loop_decode = one_pass
        return plt(ids, **{CACHE_KWARG: state}, logits_to_keep=1).logits[0, -1]
    return step


def compiled_step(plt, cache, ids):
    """The compiled one-pass step, warmed up (compiled; on CUDA its graph captured) on a copy of the
    static `cache`, and the warm-up's seconds."""
    from loopcoder.model.compiled import CUDA_WARMUP_CALLS

    compiled = plt.enable_compiled_decode()
    spare = copy.deepcopy(cache)
    for _ in range(CUDA_WARMUP_CALLS):
        compiled(ids, spare)
    del spare
    return (lambda ids, state: compiled(ids, state)[0]), compiled.warmup_seconds


def parent(args) -> dict:
    ensure_checkpoint(Path(args.dir), args.scale, args.layers)
    results, reference = {}, None
    logits = tempfile.TemporaryDirectory(prefix="big-logits-")
    for variant in args.variants:
        command = [sys.executable, __file__, "--child", variant, "--dir", args.dir, "--device", args.device,
                   "--prompt", str(args.prompt), "--tokens", str(args.tokens), "--threads", str(args.threads),
                   "--probe-mb", str(args.probe_mb), "--logits", str(Path(logits.name) / "bf16.pt")] \
            + (["--reference", json.dumps(reference)] if reference else []) + (["--compile"] if args.compile else []) \
            + (["--torch-kernels"] if args.torch_kernels else [])
        print(f"=== {variant} ===", flush=True)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"the {variant} run failed (exit {done.returncode})")
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        if variant == "bf16":
            reference = results[variant]["tokens"]
    logits.cleanup()
    ratios = {f"one-pass / loop-after-loop ({v})": r["decode_ms"]["one-pass"] / r["decode_ms"]["loop-after-loop"]
              for v, r in results.items()}
    targets = {name: {"bound": ONE_PASS_TARGET, "kind": "max"} for name in ratios}
    if "bf16" in results and "int8" in results:
        ratios["decode int8 speedup over bf16"] = (results["bf16"]["decode_ms"]["one-pass"]
                                                   / results["int8"]["decode_ms"]["one-pass"])
    for v, r in results.items():
        if "compiled" in r["decode_ms"]:
            ratios[f"compiled / one-pass eager ({v})"] = r["decode_ms"]["compiled"] / r["decode_ms"]["one-pass"]
    if "int8" in results:
        ratios["int8 peak RSS GB"] = results["int8"]["peak_rss_gb"]
    targets.update({name: {"bound": bound, "kind": kind} for name, (bound, kind) in TARGETS.items() if name in ratios})
    for name, target in targets.items():
        value = ratios[name]
        target["met"] = value <= target["bound"] if target["kind"] == "max" else value >= target["bound"]
    return {"benchmark": "big", "scale": args.scale, "layers": args.layers, "device": args.device,
            "threads": args.threads, "prompt": args.prompt, "tokens": args.tokens, "torch": torch.__version__,
            "load_average": list(os.getloadavg()), "variants": results, "ratios": ratios, "targets": targets}


def print_tables(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=190)
    table = Table(title=f"7b-shape at 1/{result['scale']} width, {result['layers']} layers, {result['device']}, "
                        f"{result['threads']} threads: prefill {result['prompt']} tokens, decode {result['tokens']}")
    for column in ("variant", "load s", "peak RSS", "RSS anon/file", "prefill tok/s", "one-pass ms/tok", "loop-after-loop ms/tok",
                   "weights/token", "matvec GB/s", "% matvec BW", "agree w/ bf16", "logit err"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, r in result["variants"].items():
        agree = r["agreement_with_bf16"]
        split = r.get("rss_after_decode_gb") or {}
        table.add_row(name, f"{r['load_s']:.1f}", f"{r['peak_rss_gb']:.2f} GB",
                      f"{split['anon']:.2f}/{split['file']:.2f} GB" if split else "", f"{r['prefill_tok_s']:.1f}",
                      f"{r['decode_ms']['one-pass']:.1f}", f"{r['decode_ms']['loop-after-loop']:.1f}",
                      f"{r['weight_gb_per_token']['one-pass']:.2f} GB", f"{r['matvec_gb_s']:.1f}",
                      f"{100 * r['bandwidth_fraction']['one-pass']:.0f}%", "" if agree is None else f"{agree:.1%}",
                      "" if r.get("logit_error_vs_bf16") is None else f"{r['logit_error_vs_bf16']:.1%}")
    console.print(table)
    ratios = Table(title=f"ratios (load average {result['load_average'][0]:.1f})")
    for column in ("ratio", "value", "target", "met"):
        ratios.add_column(column, justify="left" if column == "ratio" else "right")
    for name, value in result["ratios"].items():
        target = result["targets"].get(name)
        bound = f"{'<=' if target['kind'] == 'max' else '>='} {target['bound']}" if target else ""
        ratios.add_row(name, f"{value:.3f}", bound, ("yes" if target["met"] else "NO") if target else "")
    console.print(ratios)
    for name, r in result["variants"].items():
        if r.get("compile_warmup_s") is not None:
            console.print(f"{name}: compiled {r['decode_ms']['compiled']:.1f} ms/token, warm-up {r['compile_warmup_s']:.1f}s "
                          f"(not timed in)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, choices=SCALES, default=1, help="divide the 7B's width by this")
    parser.add_argument("--layers", type=int, default=14, help="shared layers (the 7B has 14)")
    parser.add_argument("--dir", help="checkpoint directory, written once (default ~/.cache/loopcoder/big-s{scale}-l{layers})")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: bf16, int8, int4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--prompt", type=int, default=512, help="prefill tokens")
    parser.add_argument("--tokens", type=int, default=32, help="decode steps per path")
    parser.add_argument("--probe-mb", type=int, default=512, help="weight size of the bandwidth probe")
    parser.add_argument("--compile", action="store_true", help="also decode through the compiled step (model/compiled.py)")
    parser.add_argument("--torch-kernels", action="store_true",
                        help="bf16 linears through F.linear (default: as the backends load it, model/dense.py's choice)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    parser.add_argument("--logits", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not args.variants or set(args.variants) - set(VARIANTS):
        parser.error(f"--variants takes a comma-separated subset of {', '.join(VARIANTS)}")
    if args.layers < 1 or args.prompt < 1 or args.tokens < 2:
        parser.error("--layers and --prompt must be >= 1, --tokens >= 2")
    args.dir = args.dir or str(Path.home() / ".cache" / "loopcoder" / f"big-s{args.scale}-l{args.layers}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args)))
        return
    result = parent(args)
    print_tables(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
