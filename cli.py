"""`loopcoder`: the command line. Thin: parse options, call the packages, print.

Each command imports what it needs inside its body so `loopcoder --help`
stays fast and a missing optional piece only affects its own command.
"""
from __future__ import annotations

from contextlib import contextmanager

import typer
from typer.core import TyperArgument, TyperCommand


def _item_type(param, ctx) -> str:
    """`<str>` for a list parameter's `<list[str]>`."""
    return param.display_type(ctx).replace("list[", "").replace("]>", ">")


class HelpCommand(TyperCommand):
    """`--help` in the usual conventions: `TASK` and `[REPOS]...` in the usage line, nothing after a flag,
    and a repeatable value's own type (`<str>`), not `<list[str]>`."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if param.metavar is not None:
                continue
            if isinstance(param, TyperArgument):
                param.metavar = param.name.upper()
                if param.nargs != 1:
                    param.display_type_rich = lambda ctx, param=param: _item_type(param, ctx) + "..."
            elif param.is_flag:
                param.metavar = ""
            elif param.multiple:
                param.metavar = _item_type(param, ctx)
        return params

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar if param.required else f"[{param.metavar}]"
                pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces


app = typer.Typer(
    name="loopcoder",
    help="LoopCoder: a coding agent driven by an in-process Parallel Loop Transformer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
model_app = typer.Typer(help="Inspect, create and train PLT checkpoints.", no_args_is_help=True)
app.add_typer(model_app, name="model")
swebench_app = typer.Typer(help="SWE-bench-style batch runs and evaluation.", no_args_is_help=True)
app.add_typer(swebench_app, name="swebench")
swebench_env_app = typer.Typer(help="Instance environments built from specs.", no_args_is_help=True)
swebench_app.add_typer(swebench_env_app, name="env")


def fail(message: str, code: int = 2) -> None:
    """Print a user-facing error (what went wrong, what to do) and exit."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# Options several commands share (one OptionInfo may serve several commands).
_MODEL = typer.Option(None, "--model", help="Checkpoint directory (plt, hf) or model name (openai).")
_BACKEND = typer.Option(None, "--backend", help="plt | hf | openai | replay (default: the config's backend.name, "
                        "plt; replay with --script).")
_CONFIG = typer.Option(None, "--config", help="A YAML config file (`loopcoder config` prints every key).")
_SETS = typer.Option([], "--set", help="Override a config key, e.g. --set agent.max_steps=30 (repeatable).")


# --- model: inspect, create, quantize and train checkpoints (model/; training is nano/'s) --------


@model_app.command("info")
def model_info(path: str = typer.Argument(..., help="Checkpoint directory (config.json + safetensors).")) -> None:
    """Print a checkpoint's shape, parameter count, dtype and KV-cache cost; check its tensors."""
    from pathlib import Path

    from loopcoder.model.cli_report import describe_checkpoint

    try:
        typer.echo(describe_checkpoint(Path(path)))
    except ValueError as error:
        fail(str(error))


@model_app.command("init-random")
def model_init_random(
    path: str = typer.Argument(..., help="New checkpoint directory to write."),
    preset: str = typer.Option("tiny", help="tiny | small | 7b-shape"),
    seed: int = typer.Option(0, help="Seed of the random weights."),
    tokenizer: str = typer.Option(None, help="Copy this directory's tokenizer files into the checkpoint."),
    meta: bool = typer.Option(False, "--meta", help="Write config.json only (no weights); report the size."),
) -> None:
    """Write a randomly initialised PLT checkpoint with the released layout."""
    from pathlib import Path

    from loopcoder.model.cli_report import init_random

    try:
        typer.echo(init_random(Path(path), preset, seed, Path(tokenizer) if tokenizer else None, meta))
    except ValueError as error:
        fail(str(error))

@model_app.command("quantize")
def model_quantize(
    source: str = typer.Argument(..., help="Dense checkpoint directory to read."),
    destination: str = typer.Argument(..., help="New directory for the quantized checkpoint."),
    method: str = typer.Option("int8", "--method", help="int8 (per output channel) or int4 (per group)."),
    group_size: int = typer.Option(128, help="int4: inputs per scale/zero group (a power of two >= 16)."),
) -> None:
    """Write a weight-only quantized copy of a checkpoint, shard by shard; it loads as is (`--model DST`)."""
    from pathlib import Path

    from loopcoder.model.quantized_loading import write_quantized

    try:
        done = write_quantized(Path(source), Path(destination), {"method": method, "group_size": group_size})
    except (OSError, ValueError) as error:
        fail(str(error))
    typer.echo(f"{done['method']} (group {done['group_size']}): {done['bytes'] / 2**20:,.1f} MiB of tensors "
               f"in {done['files']} file(s) -> {destination}")


@model_app.command("train")
def model_train(
    data: str = typer.Option(..., help="Training directory: train.jsonl + tokenizer/ (see `python -m nano data`)."),
    out: str = typer.Option(..., help="Checkpoint directory to write; out/checkpoint/ is what --resume continues."),
    preset: str = typer.Option("nano", help="Model size: a preset of `model init-random` (nano, tiny, small)."),
    steps: int = typer.Option(2000, help="Optimizer steps in total (a resumed run counts the steps already done)."),
    batch_tokens: int = typer.Option(8192, help="Padded tokens per step (rows x longest row)."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (linear warmup, cosine decay to a tenth)."),
    warmup: int = typer.Option(100, help="Warmup steps."),
    save_every: int = typer.Option(100, help="Checkpoint every this many steps."),
    threads: int = typer.Option(2, help="CPU threads (torch.set_num_threads)."),
    seed: int = typer.Option(0, help="Seed of the initial weights and of the batch order."),
    resume: bool = typer.Option(False, "--resume", help="Continue from out/checkpoint/ (weights, optimizer, step)."),
    init: str = typer.Option(None, "--init", help="Start from a finished run's weights (a previous phase)."),
) -> None:
    """Train a PLT from scratch on chat transcripts, loss on the assistant turns only (loopcoder-nano)."""
    import sys
    from pathlib import Path

    checkout = Path(__file__).resolve().parent  # nano/ ships with the repository, not with the package
    if (checkout / "nano" / "__init__.py").is_file() and str(checkout) not in sys.path:
        sys.path.append(str(checkout))
    try:
        from nano.train import TrainConfig, TrainError, train_with_progress
    except ModuleNotFoundError as error:
        if error.name != "nano":
            raise
        fail("`model train` needs the training recipe in nano/, which is not installed with the package; "
             "run it from a LoopCoder repository checkout installed with `pip install -e .`.")

    cfg = TrainConfig(data=Path(data), out=Path(out), preset=preset, steps=steps, batch_tokens=batch_tokens, lr=lr,
                      warmup=warmup, save_every=save_every, threads=threads, seed=seed, resume=resume,
                      init=Path(init) if init else None)
    try:
        summary = train_with_progress(cfg)
    except TrainError as error:
        fail(str(error))
    typer.echo(f"{summary['steps']} steps ({summary['resumed_from']} before this run), final loss "
               f"{summary['final_loss']:.4f}, {summary['tokens']:,} tokens in {summary['seconds']:.0f}s "
               f"({summary['tokens_per_s']:,} tok/s), {summary['parameters']:,} parameters -> {out}")


# --- generate: one streamed completion from a loaded model (runtime/) ------------------------

_COMPILE = typer.Option(False, "--compile", help="plt: decode through torch.compile (CUDA graphs on a GPU, C++ "
                        "kernels on the CPU); the first token waits for the compile (reported on stderr).")


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="Prompt text; with --chat, the user message."),
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint directory (config.json, weights, tokenizer)."),
    chat: bool = typer.Option(False, "--chat", help="Send the prompt as a user turn through the chat template."),
    max_new_tokens: int = typer.Option(256, help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, help="0 is greedy."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling mass (1 turns it off)."),
    top_k: int = typer.Option(0, help="Sample among the k best tokens (0 turns it off)."),
    seed: int = typer.Option(None, help="Seed for sampling; the same seed gives the same text."),
    stop: list[str] = typer.Option([], help="Stop before this string (repeatable)."),
    speculative: str = typer.Option("prompt_lookup", help="prompt_lookup (drafts copied from the context, "
                                    "verified in one forward) or off."),
    speculative_tokens: int = typer.Option(8, help="Most tokens drafted at once (1-16)."),
    backend: str = typer.Option("plt", help="plt (LoopCoder-V2 checkpoints) or hf (any transformers causal LM)."),
    device: str = typer.Option(None, help="cuda, cuda:1, cpu ... (default: cuda when available)."),
    dtype: str = typer.Option(None, help="bfloat16 | float16 | float32 (default: bfloat16 on GPU, float32 on CPU)."),
    quantize: str = typer.Option(None, help="plt: int8 | int4 weight-only, quantized while loading."),
    compile_decode: bool = _COMPILE,
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run tokenizer/model code shipped with the checkpoint."),
) -> None:
    """Stream a completion of PROMPT; prefill and decode speed (and --compile's warm-up) go to stderr."""
    import sys

    from loopcoder.runtime.backends import IN_PROCESS, BackendError, create_backend
    from loopcoder.runtime.backends.base import GenerationParams
    from loopcoder.runtime.sampling import check_params

    def on_text(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    if backend not in IN_PROCESS:
        fail(f"--backend must be {' or '.join(IN_PROCESS)} for generate, not {backend!r}.")
    params = GenerationParams(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                              max_new_tokens=max_new_tokens, stop=list(stop), speculative=speculative,
                              speculative_tokens=speculative_tokens)
    try:
        check_params(params)  # before the model loads (minutes for a 7B)
    except ValueError as error:
        fail(str(error))
    try:
        lm = create_backend(backend, model_path=model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                            **({"quantize": quantize} if quantize else {}), **({"compile": True} if compile_decode else {}))
        if chat:
            done = lm.complete([{"role": "user", "content": prompt}], None, params, on_text)
        else:
            done = lm.complete_text(prompt, params, on_text)
    except (BackendError, ValueError) as error:  # ValueError: bad sampling settings, tokenizer problems
        fail(str(error))
    sys.stdout.write("\n")

    def rate(tokens: int, seconds: float) -> str:
        return f"{tokens} tokens in {seconds:.2f}s ({tokens / seconds:.1f} tok/s)" if seconds > 0 else f"{tokens} tokens"

    warmup = f" (of which {done.compile_seconds:.1f}s compile warm-up)" if done.compile_seconds else ""
    typer.echo(f"prefill: {rate(done.prefilled_tokens, done.prefill_seconds)}; "
               f"decode: {rate(done.completion_tokens, done.decode_seconds)}{warmup}; finish: {done.finish_reason}", err=True)


# --- run / chat / replay / inspect: the agent on one repository (agent/) ----------------------


def _agent_call(fn, *args) -> None:
    """Run an agent command body; user-fixable problems become a one-line error, the status the exit code."""
    from loopcoder.agent.commands import USER_ERRORS

    try:
        code = fn(*args)
    except USER_ERRORS as error:
        fail(str(error))
    raise typer.Exit(code)


# Options `run` and `chat` share.
_REPO = typer.Option(".", "--repo", help="The git repository to work on.")
_SCRIPT = typer.Option(None, "--script", help="Replay: a JSON list / JSONL of raw outputs or a trajectory.")
_SANDBOX = typer.Option(None, "--sandbox", help="local (bubblewrap) | docker | none (no isolation: the model's "
                        "commands run on this machine as you).")
_IMAGE = typer.Option(None, "--image", help="Docker image for --sandbox docker.")
_IN_PLACE = typer.Option(False, "--in-place", help="Edit the repository directly, not a separate copy.")
_TRAJECTORY = typer.Option(None, "--trajectory", help="Where to write the trajectory JSON.")


@app.command("run")
def run_cmd(
    task: str = typer.Argument(..., help="What to do, in plain words."),
    repo: str = _REPO,
    model: str = _MODEL,
    backend: str = _BACKEND,
    script: str = _SCRIPT,
    sandbox: str = _SANDBOX,
    image: str = _IMAGE,
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many model turns."),
    in_place: bool = _IN_PLACE,
    compile_decode: bool = _COMPILE,
    yes: bool = typer.Option(False, "--yes", "-y", help="Apply the patch without asking; never prompt."),
    output: str = typer.Option(None, "--output", "-o", help="Also write the final patch to this file."),
    config: str = _CONFIG,
    sets: list[str] = _SETS,
    trajectory: str = _TRAJECTORY,
) -> None:
    """Let the agent do TASK in a copy of the repository, live; then show the diff and offer to apply it.

    Exit code: 0 submitted a patch, 1 error, 2 bad input (nothing ran), 3 a limit (steps, tokens, time, context),
    4 malformed tool calls or stuck, 5 submitted without any change, 130 interrupted.
    """
    from loopcoder.agent.commands import check_task, configure, run_command

    def body() -> int:
        check_task(task)
        cfg = configure(config, sets, model=model, backend=backend, script=script, sandbox=sandbox, image=image,
                        max_steps=max_steps, in_place=in_place, compile=compile_decode)
        return run_command(task, repo, cfg, yes, output, trajectory)

    _agent_call(body)


@app.command("chat")
def chat_cmd(
    repo: str = _REPO,
    model: str = _MODEL,
    backend: str = _BACKEND,
    script: str = _SCRIPT,
    sandbox: str = _SANDBOX,
    image: str = _IMAGE,
    in_place: bool = _IN_PLACE,
    compile_decode: bool = _COMPILE,
    yes: bool = typer.Option(False, "--yes", "-y", help="At the end, apply the patch without asking."),
    config: str = _CONFIG,
    sets: list[str] = _SETS,
    trajectory: str = _TRAJECTORY,
) -> None:
    """A conversation with the agent on a repository; /diff shows the changes, /exit or Ctrl-D ends."""
    from loopcoder.agent.commands import chat_command, configure

    def body() -> int:
        cfg = configure(config, sets, model=model, backend=backend, script=script, sandbox=sandbox, image=image,
                        in_place=in_place, compile=compile_decode)
        return chat_command(repo, cfg, yes, trajectory)

    _agent_call(body)


@app.command("replay")
def replay_cmd(
    path: str = typer.Argument(..., help="A trajectory JSON written by `loopcoder run` or `chat`."),
    repo: str = typer.Option(None, "--repo", help="The repository, if it moved since the run."),
    sandbox: str = typer.Option(None, "--sandbox", help="local | docker | none (default: as recorded)."),
    image: str = typer.Option(None, "--image", help="Docker image (default: as recorded)."),
    trajectory: str = typer.Option(None, "--trajectory", help="Write the replay's own trajectory here."),
) -> None:
    """Re-run a trajectory's recorded model outputs in a fresh copy; exit 0 if the final diff is the same."""
    from loopcoder.agent.commands import replay_command

    _agent_call(replay_command, path, repo, sandbox, image, trajectory)


@app.command("inspect")
def inspect_cmd(
    path: str = typer.Argument(..., help="A trajectory JSON."),
    full: bool = typer.Option(False, "--full", help="Show whole observations (and a traceback, if any)."),
) -> None:
    """Show a trajectory step by step: model text, tool calls, observations, status and patch."""
    from loopcoder.agent.commands import inspect_command

    _agent_call(inspect_command, path, full)


@app.command("clean")
def clean_cmd(
    docker: bool = typer.Option(True, "--docker/--no-docker", help="Also look for containers (needs the engine)."),
) -> None:
    """Remove what killed runs left: working copies, sandbox temp dirs, cgroups and containers of dead processes.

    Runs that are still going are never touched; each sandbox also does this when it opens.
    """
    from rich.console import Console
    from rich.markup import escape

    from loopcoder.workspace.leftovers import clean
    from loopcoder.workspace.repo import DEFAULT_ROOT

    console = Console(highlight=False)
    removed, skipped = clean(DEFAULT_ROOT, docker=docker)
    for item in removed:
        console.print(f"removed {escape(item)}")
    if skipped:
        console.print(f"[yellow]containers not checked[/]: {escape(skipped)}")
    console.print(f"{len(removed)} leftover{'s' if len(removed) != 1 else ''} removed")


@app.command("config")
def config_cmd(config: str = _CONFIG, sets: list[str] = _SETS) -> None:
    """Print the effective configuration as YAML: defaults <- user file <- --config <- --set."""
    import yaml

    from loopcoder.agent.commands import configure

    def body() -> int:
        typer.echo(yaml.safe_dump(configure(config, sets).to_dict(), sort_keys=False), nl=False)
        return 0

    _agent_call(body)


# --- swebench / refactor: the agent on many repositories (batch/) ----------------------------

SANDBOX_HELP = "local (bubblewrap over a clone from --repo-cache) or docker (the instance image when present)."
REPO_CACHE_HELP = "Directory of owner__repo git clones or bare mirrors (owner__repo.git)."
# Options the batch commands share.
_MAX_STEPS = typer.Option(None, "--max-steps", help="Stop each run after this many model turns.")
_EXECUTOR = typer.Option("local", "--executor", help="local (threads in this process) or ray (one Ray actor per "
                         "worker across a cluster; pip install 'loopcoder[ray]').")
_RAY_ADDRESS = typer.Option("auto", "--ray-address", help="ray: the cluster, auto (RAY_ADDRESS or the one this "
                            "node is in), HOST:6379 or ray://HOST:10001.")
_CPUS = typer.Option(1.0, "--cpus-per-worker", min=0, help="ray: CPUs each worker asks for.")
_GPUS = typer.Option(0.0, "--gpus-per-worker", min=0, help="ray: GPUs each worker asks for (its model loads there).")


def _batch_instances(instances: str, filter: str | None):
    from loopcoder.batch.swebench.instances import InstanceError, load_instances

    try:
        selected = load_instances(instances, filter)
    except InstanceError as error:
        fail(str(error))
    if not selected:
        fail(f"no instance in {instances} matches --filter {filter!r}")
    return selected


SPECS_HELP = "YAML/JSON environment specs: repo -> version -> spec, or instance_id -> spec (see README)."
ENV_CACHE_HELP = "Where built environments and their build logs go."


def _env_options(sandbox: str, repo_cache: str | None, specs: str | None, env_cache: str | None, **extra):
    """EnvOptions (or a subclass given as `cls`) with the specs file loaded; a bad file is a one-line error."""
    from pathlib import Path

    from loopcoder.batch.swebench.environments import EnvOptions
    from loopcoder.batch.swebench.envbuild import DEFAULT_ENV_CACHE
    from loopcoder.batch.swebench.specs import SpecError, load_specs

    cls = extra.pop("cls", EnvOptions)
    try:
        spec_map = load_specs(specs)
    except SpecError as error:
        fail(str(error))
    return cls(sandbox=sandbox, repo_cache=Path(repo_cache) if repo_cache else None, specs=spec_map,
               env_cache=Path(env_cache).expanduser() if env_cache else DEFAULT_ENV_CACHE, **extra)


def _check_sandbox(sandbox: str | None) -> None:
    from loopcoder.batch.swebench.environments import SANDBOXES

    if sandbox is not None and sandbox not in SANDBOXES:
        fail(f"--sandbox must be {' or '.join(SANDBOXES)}, not {sandbox!r}")


def _executor(kind: str, workers: int, address: str = "auto", cpus: float = 1.0, gpus: float = 0.0):
    """ExecutorOptions; `--executor ray` without Ray installed is a one-line error that says how to get it."""
    from loopcoder.batch.swebench.executors import ExecutorError, ExecutorOptions, require_ray

    if kind not in ("local", "ray"):
        fail(f"--executor must be local or ray, not {kind!r}")
    if kind == "ray":
        try:
            require_ray()
        except ExecutorError as error:
            fail(str(error))
    return ExecutorOptions(kind, workers, address, cpus, gpus)


def _batch_backend(console, config: str | None, sets: list[str], load: bool = True, **flags):
    """(config, BackendProvider): the model loaded once for every task of a batch command.

    load=False (a Ray batch: each worker loads its own): the provider is None, the config is still checked.
    """
    from loopcoder.agent.commands import USER_ERRORS, configure
    from loopcoder.batch.swebench.backends import BackendProvider, check_backend

    try:
        cfg = configure(config, sets, **flags)
        if not load:
            check_backend(cfg)
            return cfg, None
        with console.status("loading the model..."):
            return cfg, BackendProvider(cfg)
    except USER_ERRORS as error:
        fail(str(error))


@contextmanager
def _executor_errors():
    """An ExecutorError (no cluster, workers that cannot start) as a one-line error."""
    from loopcoder.batch.swebench.executors import ExecutorError

    try:
        yield
    except ExecutorError as error:
        fail(str(error))


@swebench_app.command("eval")
def swebench_eval(
    predictions: str = typer.Option(..., "--predictions", "-p", help="Predictions .jsonl/.json, or `gold`."),
    instances: str = typer.Option(..., "--instances", "-i", help="Instances .json/.jsonl, or a hub dataset name[:split]."),
    filter: str = typer.Option(None, "--filter", help="Regular expression searched in instance_id."),
    workers: int = typer.Option(1, "--workers", min=1, help="Instances evaluated at the same time."),
    sandbox: str = typer.Option("local", "--sandbox", help=SANDBOX_HELP),
    repo_cache: str = typer.Option(None, "--repo-cache", help=REPO_CACHE_HELP),
    output: str = typer.Option(None, "--output", help="Where reports, logs and the summary go "
                               "(default: ~/.cache/loopcoder/runs/evaluation)."),
    run_id: str = typer.Option(None, "--run-id", help="Name of this evaluation (default: the time)."),
    test_cmd: str = typer.Option(None, "--test-cmd", help="Test command for every instance (default: the spec's test_cmd)."),
    timeout: float = typer.Option(1800.0, "--timeout", help="Seconds the tests of one instance may take."),
    specs: str = typer.Option(None, "--specs", help=SPECS_HELP),
    env_cache: str = typer.Option(None, "--env-cache", help=ENV_CACHE_HELP),
    executor: str = _EXECUTOR,
    ray_address: str = _RAY_ADDRESS,
    cpus_per_worker: float = _CPUS,
) -> None:
    """Grade predictions like the SWE-bench harness: report.json per instance and a run summary."""
    import time
    from pathlib import Path

    from rich.console import Console
    from rich.progress import Progress

    from loopcoder.batch.swebench.cleanup import removed_on_signal
    from loopcoder.batch.swebench.eval import EvalOptions, evaluate
    from loopcoder.batch.swebench.instances import InstanceError
    from loopcoder.batch.swebench.predictions import load_predictions
    from loopcoder.batch.swebench.tables import eval_table

    _check_sandbox(sandbox)
    executor_options = _executor(executor, workers, ray_address, cpus_per_worker)
    selected = _batch_instances(instances, filter)
    try:
        preds = load_predictions(predictions, selected)
    except InstanceError as error:
        fail(str(error))
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    options = _env_options(sandbox, repo_cache, specs, env_cache, cls=EvalOptions, test_cmd=test_cmd, timeout=timeout)
    output = Path(output or "~/.cache/loopcoder/runs/evaluation").expanduser()
    console = Console()
    with removed_on_signal(), _executor_errors(), Progress(console=console, transient=True) as progress:
        task = progress.add_task("evaluating", total=sum(i.instance_id in preds for i in selected))
        summary, outcomes, summary_path = evaluate(selected, preds, options, output, run_id, workers,
                                                   on_done=lambda _: progress.advance(task), executor=executor_options)
    console.print(eval_table(outcomes, summary))
    console.print(f"reports: {output / run_id}\nsummary: {summary_path}", highlight=False)
    if summary["error_instances"]:
        raise typer.Exit(1)


@swebench_app.command("run")
def swebench_run(
    instances: str = typer.Option(..., "--instances", "-i", help="Instances .json/.jsonl, or a hub dataset name[:split]."),
    output: str = typer.Option(..., "--output", "-o", help="Run directory: preds.jsonl, trajectories/, errors.jsonl."),
    filter: str = typer.Option(None, "--filter", help="Regular expression searched in instance_id."),
    workers: int = typer.Option(1, "--workers", min=1, help="Instances run at the same time (one shared model)."),
    sandbox: str = typer.Option(None, "--sandbox", help=SANDBOX_HELP),
    repo_cache: str = typer.Option(None, "--repo-cache", help=REPO_CACHE_HELP),
    backend: str = _BACKEND,
    model: str = _MODEL,
    script: str = typer.Option(None, "--script", help="Replay: one script for every instance, or a directory of <instance_id>.json."),
    max_steps: int = _MAX_STEPS,
    config: str = _CONFIG,
    sets: list[str] = _SETS,
    specs: str = typer.Option(None, "--specs", help=SPECS_HELP),
    env_cache: str = typer.Option(None, "--env-cache", help=ENV_CACHE_HELP),
    executor: str = _EXECUTOR,
    ray_address: str = _RAY_ADDRESS,
    cpus_per_worker: float = _CPUS,
    gpus_per_worker: float = _GPUS,
) -> None:
    """Run the agent on each instance; append predictions to OUTPUT/preds.jsonl (a rerun resumes)."""
    from pathlib import Path

    from rich.console import Console
    from rich.live import Live

    from loopcoder.batch.swebench.cleanup import removed_on_signal
    from loopcoder.batch.swebench.run import run_batch
    from loopcoder.batch.swebench.tables import RunCounters

    _check_sandbox(sandbox)
    executor_options = _executor(executor, workers, ray_address, cpus_per_worker, gpus_per_worker)
    selected = _batch_instances(instances, filter)
    console = Console()
    cfg, provider = _batch_backend(console, config, sets, load=executor == "local", model=model, backend=backend,
                                   script=script, sandbox=sandbox, max_steps=max_steps)
    env_options = _env_options(cfg.sandbox.kind, repo_cache, specs, env_cache, image=cfg.sandbox.image,
                               network=cfg.sandbox.network)
    counters = RunCounters(len(selected), 0)
    out = Path(output)
    try:
        with removed_on_signal(), _executor_errors(), Live(counters, console=console, refresh_per_second=2,
                                                           transient=True) as live:
            outcomes = run_batch(selected, provider, cfg, env_options, out, workers,
                                 on_start=counters.start_run, on_done=counters.add, executor=executor_options,
                                 on_retry=lambda job, attempt, why: live.console.print(
                                     f"[yellow]{job.key}[/]: {why}; running it again (attempt {attempt})",
                                     highlight=False))
    finally:
        if provider:
            provider.close()
    console.print(counters)
    for outcome in outcomes:
        if outcome.error:
            console.print(f"[red]{outcome.instance_id}[/]: {outcome.error}", highlight=False)
    console.print(f"predictions: {out / 'preds.jsonl'}  trajectories: {out / 'trajectories'}", highlight=False)
    if any(o.error for o in outcomes):
        console.print(f"errors: {out / 'errors.jsonl'} (rerun the same command to retry them)", highlight=False)
        raise typer.Exit(1)


@swebench_env_app.command("build")
def swebench_env_build(
    instances: str = typer.Option(..., "--instances", "-i", help="Instances .json/.jsonl, or a hub dataset name[:split]."),
    filter: str = typer.Option(None, "--filter", help="Regular expression searched in instance_id."),
    specs: str = typer.Option(None, "--specs", help=SPECS_HELP),
    sandbox: str = typer.Option("local", "--sandbox", help="local (cached venvs) or docker (instance images)."),
    repo_cache: str = typer.Option(None, "--repo-cache", help=REPO_CACHE_HELP),
    env_cache: str = typer.Option(None, "--env-cache", help=ENV_CACHE_HELP),
    image: str = typer.Option(None, "--image", help="docker: the base image instance images are built from."),
    workers: int = typer.Option(1, "--workers", min=1, help="Environments built at the same time."),
) -> None:
    """Build (or find cached) every selected instance's environment ahead of run/eval, with progress."""
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Console
    from rich.progress import Progress

    from loopcoder.batch.swebench.cleanup import removed_on_signal
    from loopcoder.batch.swebench.environments import build_environment

    _check_sandbox(sandbox)
    selected = _batch_instances(instances, filter)
    options = _env_options(sandbox, repo_cache, specs, env_cache, image=image)
    console = Console()
    failures: list[str] = []

    def one(instance) -> None:
        try:
            where = build_environment(instance, options)
            progress.console.print(f"[green]ready[/] {instance.instance_id}: {where}", highlight=False)
        except Exception as error:  # each failure is reported with its log; the others still build
            failures.append(instance.instance_id)
            progress.console.print(f"[red]failed[/] {instance.instance_id}: {type(error).__name__}: {error}",
                                   highlight=False)
        progress.advance(task)

    with removed_on_signal(), Progress(console=console) as progress:
        task = progress.add_task("building environments", total=len(selected))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, selected))
    console.print(f"{len(selected) - len(failures)}/{len(selected)} environments ready", highlight=False)
    if failures:
        raise typer.Exit(1)


@app.command("refactor")
def refactor_cmd(
    repos: list[str] = typer.Argument(None, help="Repositories to refactor (with --task)."),
    task: str = typer.Option(None, "--task", help="What to change, in plain words (one task for every REPO)."),
    plan: str = typer.Option(None, "--plan", help="A YAML plan: several tasks, each with its repos (see batch/refactor.py)."),
    branch: str = typer.Option(None, "--branch", help="Commit the result on this new branch (implies --commit)."),
    commit: bool = typer.Option(False, "--commit", help="Commit each result on a new branch (never the current one)."),
    test_cmd: str = typer.Option(None, "--test-cmd", help="Test command run before and after (default: detected)."),
    output: str = typer.Option(None, "--output", "-o", help="Where refactor.json, patches and trajectories go "
                               "(default: refactor-<time>/ under run.output_dir, ~/.cache/loopcoder/runs)."),
    backend: str = _BACKEND,
    model: str = _MODEL,
    script: str = typer.Option(None, "--script", help="Replay: one script for every repo, or a directory of <repo name>.json."),
    sandbox: str = typer.Option(None, "--sandbox", help="local (bubblewrap) | docker."),
    max_steps: int = _MAX_STEPS,
    config: str = _CONFIG,
    sets: list[str] = _SETS,
    workers: int = typer.Option(1, "--workers", min=1, help="Repositories worked on at the same time."),
    executor: str = _EXECUTOR,
    ray_address: str = _RAY_ADDRESS,
    cpus_per_worker: float = _CPUS,
    gpus_per_worker: float = _GPUS,
) -> None:
    """Run the agent on each repository (separate copies); save patches, optionally commit them on new branches."""
    import time
    from pathlib import Path

    from rich.console import Console

    from loopcoder.agent.outcome import Status
    from loopcoder.batch.refactor import PlanError, RefactorTask, load_plan, refactor_table, run_refactors

    _check_sandbox(sandbox)
    executor_options = _executor(executor, workers, ray_address, cpus_per_worker, gpus_per_worker)
    if bool(plan) == bool(task):
        fail("give either --task \"...\" with one or more REPO paths, or --plan PLAN.yaml")
    if task is not None and not task.strip():
        fail('--task is empty: say what to change, e.g. --task "Rename helper() to assist()"')
    if task and not repos:
        fail("--task needs at least one REPO path")
    try:
        tasks, plan_commit = load_plan(plan) if plan else ([RefactorTask(task, list(repos))], False)
    except PlanError as error:
        fail(str(error))
    for t in tasks:  # flags fill what a plan entry leaves open
        t.branch, t.test_command = t.branch or branch, t.test_command or test_cmd
    commit = commit or plan_commit or bool(branch)
    if executor == "local":  # (Ray workers may see repositories this machine does not)
        _check_some_repository([repo for t in tasks for repo in t.repos])
    console = Console()
    cfg, provider = _batch_backend(console, config, sets, load=executor == "local", model=model, backend=backend,
                                   script=script, sandbox=sandbox, max_steps=max_steps)
    out = Path(output) if output else Path(cfg.run.output_dir).expanduser() / f"refactor-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        with _executor_errors(), console.status("refactoring...") as status:
            outcomes = run_refactors(tasks, provider, cfg, out, commit, executor=executor_options,
                                     on_done=lambda o: status.update(f"refactoring... {o.repo}: {o.status}"))
    finally:
        if provider:
            provider.close()
    console.print(refactor_table(outcomes))
    console.print(f"results: {out / 'refactor.json'}; each repo's patch and trajectory in {out}/<n>-<m>-<repo>/",
                  highlight=False, soft_wrap=True)
    if any(o.status == Status.ERROR for o in outcomes):
        raise typer.Exit(1)


def _check_some_repository(repos: list[str]) -> None:
    """Before a model loads: a bad repository is that repository's error in the results, but when every one
    is bad there is nothing to load the model for."""
    from loopcoder.workspace.repo import RepoError, check_repository

    errors = []
    for repo in repos:
        try:
            check_repository(repo)
            return
        except RepoError as error:
            errors.append(str(error))
    fail("no repository to work on: " + " ".join(dict.fromkeys(errors)))


# --- serve: the OpenAI-compatible HTTP API (server/) -----------------------------------------


@app.command()
def serve(
    model: str = typer.Option(..., "--model", help="Checkpoint directory (config.json, weights, tokenizer)."),
    backend: str = typer.Option("plt", help="plt (our LoopCoder-V2 implementation) or hf (any causal LM)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; anything but loopback is reachable by others."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on (0: any free port)."),
    model_name: str = typer.Option(None, help="Name clients pass as `model` (default: the directory's name)."),
    sessions: int = typer.Option(4, help="Conversations whose KV cache is kept between requests."),
    max_body_bytes: int = typer.Option(8 * 1024 * 1024, help="Largest request body accepted (413 above)."),
    read_timeout: float = typer.Option(30.0, help="Seconds a request body may take to arrive (408 after)."),
    max_queue: int = typer.Option(16, help="Chat requests in the server at once, queued or running (429 above)."),
    api_key: str = typer.Option(None, envvar="LOOPCODER_SERVE_API_KEY",
                                help="Require 'Authorization: Bearer KEY' (env LOOPCODER_SERVE_API_KEY)."),
    device: str = typer.Option(None, help="cuda, cuda:1, cpu (default: cuda when available)."),
    dtype: str = typer.Option(None, help="bfloat16, float16, float32 (default: bfloat16 on GPU, float32 on CPU)."),
    context_window: int = typer.Option(None, help="Tokens of context (default: the model's max_position_embeddings)."),
    quantize: str = typer.Option(None, help="plt: int8 | int4 weight-only, quantized while loading."),
    compile_decode: bool = _COMPILE,
    trust_remote_code: bool = typer.Option(False, help="Allow the checkpoint's own tokenizer code to run."),
) -> None:
    """Serve the model over an OpenAI-compatible API: /v1/models and /v1/chat/completions."""
    from pathlib import Path

    from loopcoder.server import Limits, ServeError
    from loopcoder.server.run import configure_logging
    from loopcoder.server.run import serve as run_server

    configure_logging()
    options = {"device": device, "dtype": dtype, "context_window": context_window, "trust_remote_code": trust_remote_code,
               "quantize": quantize, "compile": compile_decode or None}
    try:
        run_server(Path(model), backend, host, port, model_name, sessions, Limits(max_body_bytes, read_timeout, max_queue),
                   api_key, {k: v for k, v in options.items() if v is not None})
    except ServeError as error:
        fail(str(error))


for _typer in (app, model_app, swebench_app):  # every command's --help, whoever added it
    for _command in _typer.registered_commands:
        if _command.cls in (None, TyperCommand):
            _command.cls = HelpCommand

if __name__ == "__main__":
    app()
