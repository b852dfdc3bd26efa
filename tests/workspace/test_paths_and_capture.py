"""Property tests for the pure parts every sandbox shares: path checks and the output cap."""
from __future__ import annotations

import posixpath

import pytest
from hypothesis import example, given, strategies as st

from loopcoder.workspace.capture import OutputCap
from loopcoder.workspace.paths import relative_inside
from loopcoder.workspace.sandbox import SandboxError

segments = st.sampled_from(["..", ".", "a", "b", "", "/", "testbed", "testbed2", "etc", "\0", " "])


@given(st.lists(segments, max_size=8).map("/".join), st.sampled_from(["/testbed", "/home/u/repo/", "/"]))
def test_relative_inside_never_leaves_the_workdir(path, workdir):
    try:
        rel = relative_inside(path, workdir)
    except SandboxError:
        return
    full = posixpath.normpath(posixpath.join(workdir, rel))
    root = posixpath.normpath(workdir)
    assert full == root or full.startswith(root.rstrip("/") + "/")
    assert not rel.startswith("/") and ".." not in rel.split("/")


@pytest.mark.parametrize("path,rel", [("/testbed/x/../y.py", "y.py"), ("x//y/", "x/y"), ("/testbed", "."), ("./a", "a")])
def test_relative_inside_normalises(path, rel):
    assert relative_inside(path, "/testbed") == rel


@example(chunks=[b"\xc2\x80"], limit=2)  # a character across the head/tail boundary
@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(min_value=2, max_value=400))
def test_cap_keeps_exact_head_and_tail(chunks, limit):
    cap = OutputCap(limit)
    for chunk in chunks:
        cap.add(chunk)
    data = b"".join(chunks)
    head, tail = data[: limit // 2], data[len(data) - (limit - limit // 2):]
    assert cap.total == len(data) and cap.truncated == (len(data) > limit)
    if not cap.truncated:
        assert cap.text() == data.decode("utf-8", errors="replace")
    else:
        omitted = len(data) - len(head) - len(tail)
        expected = (head.decode("utf-8", errors="replace") + f"\n[... {omitted} bytes of output omitted ...]\n"
                    + tail.decode("utf-8", errors="replace"))
        assert cap.text() == expected
