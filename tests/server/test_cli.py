"""`loopcoder serve` as a real process: serves, logs one line per request, stops cleanly on Ctrl-C;
refuses to start with a clear message, never a traceback."""
from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai

LOOPCODER = [sys.executable, "-c", "from cli import app; app()"]
ROOT = Path(__file__).resolve().parents[2]


def start(*args: str) -> tuple[subprocess.Popen, "queue.Queue[str]"]:
    proc = subprocess.Popen([*LOOPCODER, "serve", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    return proc, lines


def wait_for(lines: "queue.Queue[str]", pattern: str, seen: list[str], timeout: float = 120) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if m := re.search(pattern, line):
            return m
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


def drain(proc: subprocess.Popen, lines: "queue.Queue[str]", seen: list[str]) -> str:
    proc.wait(timeout=60)
    time.sleep(0.1)
    while not lines.empty():
        seen.append(lines.get())
    return "".join(seen)


def test_serves_then_stops_cleanly_on_ctrl_c(tiny_checkpoint):
    proc, lines = start("--model", str(tiny_checkpoint), "--port", "0", "--model-name", "tiny", "--device", "cpu")
    seen: list[str] = []
    try:
        url = wait_for(lines, r"serving 'tiny' at (http://\S+/v1)", seen).group(1)
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        done = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert done.usage.completion_tokens <= 3
        wait_for(lines, r'"POST /v1/chat/completions HTTP/1.1" 200 .* prefilled=\d+ reused=0', seen)
    finally:
        proc.send_signal(signal.SIGINT)
    out = drain(proc, lines, seen)
    assert proc.returncode == 0, out
    assert "shutting down" in out and "Traceback" not in out


def test_refuses_to_start_with_a_reason(tmp_path, caplog):
    from typer.testing import CliRunner

    from loopcoder.cli import app

    runner = CliRunner()
    exposed = runner.invoke(app, ["serve", "--model", str(tmp_path), "--host", "192.0.2.1", "--port", "0"])  # TEST-NET
    missing = runner.invoke(app, ["serve", "--model", str(tmp_path / "nope"), "--port", "0"])
    assert exposed.exit_code == 2 and missing.exit_code == 2
    assert "not loopback" in caplog.text
    assert "cannot listen on 192.0.2.1:0" in " ".join(exposed.output.split())
    assert "does not exist" in " ".join(missing.output.split())
    assert exposed.exception is None or isinstance(exposed.exception, SystemExit)
