"""Training a PLT from scratch on chat transcripts (`loopcoder model train`), made for loopcoder-nano on a CPU.

Data directory: `train.jsonl` (one conversation per line: `{"text": rendered
chat, "spans": [[start, end], ...], "group": n}`; the spans are the characters
the model must learn to write, i.e. the assistant turns with their
`<|im_end|>`; a batch takes its rows from one group) and `tokenizer/`.

The loss is the model's own forward (the same shifted-CLP math as inference)
on the span tokens only. Rows of a batch that begin with the same tokens (the
system prompt and tool schemas every transcript shares) run that prefix once,
without gradient, into a PLTCache copied to every row; the rows continue from
it with gradient. The forward values are exactly those of a full forward; only
the gradient through the shared prefix's keys is dropped, which takes most of
the cost away when that prefix is half of every transcript.

Resumable: `out/checkpoint/` holds the weights, the optimizer, the step and the
RNG state; the batch order is a function of (seed, step), so a resumed run sees
the batches the uninterrupted one would have.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, GenerationConfig

from loopcoder.model.configuration_plt import IQuestPLTCoderConfig
from loopcoder.model.modeling_plt import IQuestPLTCoderForCausalLM
from loopcoder.model.presets import PRESETS, copy_tokenizer, preset_config

IGNORE = -100
# loopcoder-nano: two loops, ~1.3M parameters (5 MB in fp32); the vocabulary grows to the tokenizer's.
CHECKPOINT = "checkpoint"


@dataclass
class TrainConfig:
    data: Path
    out: Path
    preset: str = "nano"
    steps: int = 2000
    batch_tokens: int = 8192  # padded tokens per optimizer step
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    save_every: int = 100
    threads: int = 2
    resume: bool = False
    init: Path | None = None  # start from these weights (a previous phase) with a fresh optimizer and schedule


@dataclass
class Example:
    ids: list[int]
    labels: list[int]  # IGNORE outside the spans
    group: int = 0  # transcripts of one group share their opening (one group per batch)


class TrainError(ValueError):
    """A problem with the data or the output directory, worded for the user."""


def model_config(preset: str, **overrides) -> IQuestPLTCoderConfig:
    """The released config with a preset's sizes (model/presets.py)."""
    if preset not in PRESETS:
        raise TrainError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return preset_config(preset, **overrides)


# --- data ---------------------------------------------------------------------


def load_examples(data: Path, tokenizer) -> list[Example]:
    """Tokenize every transcript; a token is trained on when it lies inside one of its spans."""
    path = data / "train.jsonl"
    if not path.is_file():
        raise TrainError(f"{path} not found; build the data first (python -m nano data --out {data}).")
    examples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
            text, spans = record["text"], record["spans"]
        except (ValueError, KeyError, TypeError) as exc:
            raise TrainError(f"{path}:{n} is not a {{\"text\", \"spans\"}} JSON object ({exc})") from None
        examples.append(tokenize_example(tokenizer, text, spans, record.get("group", 0)))
    if not examples:
        raise TrainError(f"{path} holds no transcripts")
    return examples


def tokenize_example(tokenizer, text: str, spans: list[list[int]], group: int = 0) -> Example:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = [IGNORE] * len(enc["input_ids"])
    for i, (token, (start, end)) in enumerate(zip(enc["input_ids"], enc["offset_mapping"])):
        if any(s <= start and end <= e for s, e in spans):
            labels[i] = token
    return Example(enc["input_ids"], labels, group)


def plan_batches(lengths: list[int], groups: list[int], batch_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch of batches: one group per batch, similar lengths together, rows * longest <= batch_tokens.

    `lengths` are what a row runs with gradient (its tokens after the group's shared opening).
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    members: dict[int, list[int]] = {}
    for i in order:
        members.setdefault(groups[i], []).append(i)
    chunk = max(1, batch_tokens // max(1, min(lengths))) * 8  # sort by length within chunks of this many
    batches: list[list[int]] = []
    for group in members.values():
        for g in range(0, len(group), chunk):
            current: list[int] = []
            for i in sorted(group[g:g + chunk], key=lengths.__getitem__):
                if current and (len(current) + 1) * lengths[i] > batch_tokens:
                    batches.append(current)
                    current = []
                current.append(i)
            batches.append(current)
    rng.shuffle(batches)
    return batches


def group_openings(examples: list[Example]) -> dict[int, int]:
    """Per group, the tokens all its rows start with (run once per batch, without gradient)."""
    members: dict[int, list[Example]] = {}
    for e in examples:
        members.setdefault(e.group, []).append(e)
    return {group: shared_prefix(rows) for group, rows in members.items()}


class BatchStream:
    """Batches by global step, deterministic in (seed, step): what resuming needs."""

    def __init__(self, examples: list[Example], batch_tokens: int, seed: int):
        self.examples, self.batch_tokens, self.seed = examples, batch_tokens, seed
        opening = group_openings(examples)
        self.lengths = [len(e.ids) - opening[e.group] for e in examples]
        self.groups = [e.group for e in examples]
        if max(self.lengths) > batch_tokens:
            raise TrainError(f"the longest transcript runs {max(self.lengths)} tokens after its group's shared "
                             f"opening, more than --batch-tokens {batch_tokens}; raise --batch-tokens")
        self._epoch, self._plan = -1, []

    def batch(self, step: int) -> list[Example]:
        epoch, index = 0, step
        while True:
            plan = self._plan_for(epoch)
            if index < len(plan):
                return [self.examples[i] for i in plan[index]]
            index -= len(plan)
            epoch += 1

    def _plan_for(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            self._epoch, self._plan = epoch, plan_batches(self.lengths, self.groups, self.batch_tokens, self.seed, epoch)
        return self._plan


# --- one step -------------------------------------------------------------------


def shared_prefix(rows: list[Example]) -> int:
    """Tokens every row starts with, stopping before the token that predicts the first trained label."""
    first = rows[0].ids
    n = min(len(r.ids) for r in rows)
    for r in rows:
        trained = next((i for i, label in enumerate(r.labels) if label != IGNORE), len(r.labels))
        n = min(n, trained - 1)
        n = next((i for i in range(n) if r.ids[i] != first[i]), n)
    return max(n, 0)


def padded(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def batch_loss(model: IQuestPLTCoderForCausalLM, rows: list[Example]) -> torch.Tensor:
    """Mean cross-entropy over the rows' labelled tokens; right padding is never attended by real tokens."""
    prefix = shared_prefix(rows)
    cache = None
    if prefix:
        with torch.no_grad():
            cache = model.new_cache(1)
            model(input_ids=torch.tensor([rows[0].ids[:prefix]]), past_key_values=cache, use_cache=True)
        cache.reorder_cache(torch.zeros(len(rows), dtype=torch.long))
    input_ids = padded([r.ids[prefix:] for r in rows], 0)
    labels = padded([r.labels[prefix:] for r in rows], IGNORE)
    return model(input_ids=input_ids, labels=labels, past_key_values=cache, use_cache=cache is not None).loss


def learning_rate(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


# --- checkpoints ------------------------------------------------------------------


def save_checkpoint(model, optimizer, step: int, cfg: TrainConfig) -> None:
    """Weights, optimizer, step and RNG state; written to a temp dir then renamed, so a kill leaves the last good one."""
    final = cfg.out / CHECKPOINT
    tmp = cfg.out / (CHECKPOINT + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate()}, tmp / "trainer.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "config": _jsonable(asdict(cfg))}, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def load_checkpoint(model, optimizer, cfg: TrainConfig) -> int:
    """Restore a checkpoint into model and optimizer; the step to continue from."""
    path = cfg.out / CHECKPOINT
    if not (path / "trainer_state.json").is_file():
        raise TrainError(f"--resume: no checkpoint in {path}; start without --resume.")
    model.load_state_dict(load_file(path / "model.safetensors"))
    state = torch.load(path / "trainer.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    return json.loads((path / "trainer_state.json").read_text())["step"]


def init_weights(model, path: Path) -> None:
    """Load a finished phase's weights (same shapes) into a fresh model."""
    file = path / "model.safetensors"
    if not file.is_file():
        raise TrainError(f"--init: {file} not found; give the output directory of a finished training run.")
    try:
        model.load_state_dict(load_file(file))
    except RuntimeError as exc:
        raise TrainError(f"--init: the weights in {path} do not fit the {model.config.hidden_size}-wide "
                         f"preset and this tokenizer: {str(exc).splitlines()[0]}") from None


def _jsonable(d: dict) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


# --- the loop ---------------------------------------------------------------------


def train(cfg: TrainConfig, on_step=None) -> dict:
    """Train, checkpoint every `save_every` steps, and write the final model to `cfg.out`.

    on_step(step, loss, lr, tokens_per_second) is called after every step (progress display).
    Returns a summary: steps, final loss (mean of the last 20 steps), tokens, seconds, parameters.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tokenizer_dir = cfg.data / "tokenizer"
    if not tokenizer_dir.is_dir():
        raise TrainError(f"{tokenizer_dir} not found; the data directory needs the tokenizer it was built with.")
    cfg.out.mkdir(parents=True, exist_ok=True)
    config = model_config(cfg.preset)
    generation, _ = copy_tokenizer(tokenizer_dir, cfg.out, config)  # also sets vocab size and special ids
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    examples = load_examples(cfg.data, tokenizer)
    longest = max(len(e.ids) for e in examples)
    if longest >= config.max_position_embeddings:
        raise TrainError(f"the longest transcript has {longest} tokens; the {cfg.preset} preset holds "
                         f"{config.max_position_embeddings}")
    stream = BatchStream(examples, cfg.batch_tokens, cfg.seed)
    model = IQuestPLTCoderForCausalLM(config)
    if cfg.init is not None and not cfg.resume:
        init_weights(model, cfg.init)
    optimizer = make_optimizer(model, cfg)
    start = load_checkpoint(model, optimizer, cfg) if cfg.resume else 0
    model.train()
    log = (cfg.out / "train_log.jsonl").open("a")
    losses: list[float] = []
    tokens = 0
    began = time.perf_counter()
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        lr = learning_rate(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows = stream.batch(step)
        loss = batch_loss(model, rows)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        n_tokens = sum(len(r.ids) for r in rows)
        tokens += n_tokens
        speed = n_tokens / (time.perf_counter() - t0)
        losses.append(loss.item())
        log.write(json.dumps({"step": step + 1, "loss": round(losses[-1], 4), "lr": lr, "rows": len(rows),
                              "tokens_per_s": round(speed), "elapsed_s": round(time.perf_counter() - began, 1)}) + "\n")
        log.flush()
        if on_step is not None:
            on_step(step + 1, losses[-1], lr, speed)
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            save_checkpoint(model, optimizer, step + 1, cfg)
    log.close()
    model.save_pretrained(cfg.out)
    if generation:
        GenerationConfig(**generation).save_pretrained(cfg.out)
    seconds = time.perf_counter() - began
    return {"steps": cfg.steps, "resumed_from": start, "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
            "tokens": tokens, "seconds": round(seconds, 1), "tokens_per_s": round(tokens / max(seconds, 1e-9)),
            "parameters": sum(p.numel() for p in model.parameters()), "examples": len(examples)}


def train_with_progress(cfg: TrainConfig) -> dict:
    """`train` with a progress bar showing loss, learning rate and tokens/s."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns) as progress:
        bar = progress.add_task("training", total=cfg.steps)

        def on_step(step: int, loss: float, lr: float, speed: float) -> None:
            progress.update(bar, completed=step, description=f"loss {loss:.3f}  lr {lr:.1e}  {speed:,.0f} tok/s")

        return train(cfg, on_step)
