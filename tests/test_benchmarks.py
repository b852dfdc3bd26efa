"""The benchmark scripts run and measure what they say (no timings asserted: speed is the scripts' output)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.speculative import Scripted
from loopcoder.runtime.params import GenerationParams
from loopcoder.runtime.session import Session
from tests.model.conftest import tiny_model

ROOT = Path(__file__).resolve().parents[1]


def test_decode_benchmark_reports_its_ratios_and_the_draft_checks():
    done = subprocess.run([sys.executable, "benchmarks/decode.py", "--preset", "tiny", "--threads", "1", "--steps", "3",
                           "--warmup", "1", "--prompt", "32", "--prefill-repeats", "1", "--probe-mb", "8"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ratios = json.loads(done.stdout.strip().splitlines()[-1])["ratios"]
    for name in ("verify 8 pipelined / decode PLT-parallel", "verify 8 loop after loop / decode PLT-parallel",
                 "decode PLT-sequential / PLT-parallel"):
        assert ratios[name] > 0


def test_a_scripted_plt_writes_its_script_with_drafts_pipelined_or_not():
    """speculative.py's Scripted wrapper: the real forward runs, the logits name the script's next token, on
    the chunk path and on the pipelined one alike, so both modes write the same reply."""
    model = Scripted(tiny_model(4, torch.float32))
    prompt = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14] * 3
    reply = [5, 6, 7, 8, 9, 10, 40, 41, 5, 6, 7, 8, 9, 10, 11, 12, 13, 50, 51]
    model.script = prompt + reply + [2]
    for pipelined in (True, False):
        model.pipelined = pipelined
        session = Session(model, 4096, model.new_cache)
        gen = session.generate(prompt, GenerationParams(max_new_tokens=64, speculative="prompt_lookup"), {2})
        assert gen.ids == reply and gen.accepted_tokens > 0
