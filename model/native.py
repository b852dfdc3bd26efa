"""Native CPU kernels: built from their C source at first use, cached, called as torch custom ops.

`int8_vnni_mm` (int8_vnni.c) multiplies by an int8 weight with AVX-512 VNNI. It is compiled with the
system C compiler (`$CC`, else `cc`) into ~/.cache/loopcoder/kernels/, named by the hash of its source,
flags and compiler, so an upgrade rebuilds it and concurrent processes agree (written to a temporary
name, then renamed). Where the CPU lacks VNNI, no compiler is found or the build fails,
`int8_vnni_unavailable()` says why and quantize.py measures torch's own kernels only.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("int8_vnni.c")
CACHE_DIR = Path("~/.cache/loopcoder/kernels")
CPU_FLAGS = ("avx512f", "avx512bw", "avx512_vnni")  # as /proc/cpuinfo spells them
COMPILE_FLAGS = ("-O3", "-std=gnu11", "-mavx512f", "-mavx512bw", "-mavx512vnni", "-fopenmp", "-shared", "-fPIC")
BUILD_TIMEOUT_S = 120
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1}  # int8_vnni.c's DTYPE_*
# Run on a fresh build in a child process before it is cached or loaded here: a library that dies with
# SIGILL (a CPU or hypervisor that reports VNNI but faults on it) or computes wrong would otherwise kill or
# mislead the user's process. x on the 16-bit grid (peak 32767, so its scale is 1): the products are exact.
SELF_TEST = """
import ctypes, sys
K, N = 70, 5
library = ctypes.CDLL(sys.argv[1])
x = (ctypes.c_float * K)(*([32767.0] + [float(k % 7 - 3) for k in range(1, K)]))
w = (ctypes.c_int8 * (N * K))(*[(i * 29) % 255 - 127 for i in range(N * K)])
scale, sums, out = (ctypes.c_float * N)(*[1.0] * N), (ctypes.c_int32 * N)(), (ctypes.c_float * N)()
library.loopcoder_int8_row_sums(w, N, K, sums)
status = library.loopcoder_int8_vnni_mm(x, 0, 1, K, w, scale, sums, out, N, 1)
want = [sum(x[k] * w[n * K + k] for k in range(K)) for n in range(N)]
sys.exit(0 if status == 0 and list(out) == want else 3)
"""


def _missing_cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return list(CPU_FLAGS)
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in CPU_FLAGS if flag not in flags]


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


def _build(compiler: str) -> Path:
    """The cached shared library, compiled now if this source/flags/compiler has none yet."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    digest = hashlib.sha256("\0".join([SOURCE.read_text(), *COMPILE_FLAGS, version]).encode()).hexdigest()[:16]
    directory = CACHE_DIR.expanduser()
    library = directory / f"int8_vnni-{digest}.so"
    if library.exists():
        return library
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle, partial = tempfile.mkstemp(dir=directory, prefix=library.name, suffix=".partial")
    os.close(handle)
    try:
        done = subprocess.run([compiler, *COMPILE_FLAGS, str(SOURCE), "-o", partial],
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode:
            raise OSError(f"{compiler} failed: {done.stderr.strip()[-800:]}")
        _self_test(partial)
        os.replace(partial, library)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return library


def _self_test(library: str) -> None:
    done = subprocess.run([sys.executable, "-c", SELF_TEST, library], capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S)
    if done.returncode < 0:
        raise OSError(f"the built kernel died with {signal.Signals(-done.returncode).name} in its self-test "
                      "(this CPU or its hypervisor does not run AVX-512 VNNI)")
    if done.returncode:
        raise OSError(f"the built kernel gave wrong products in its self-test: {done.stderr.strip()[-300:]}")


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str]:
    """(the loaded library, '') or (None, why not)."""
    missing = _missing_cpu_flags()
    if missing:
        return None, f"this CPU lacks {', '.join(missing)}"
    compiler = _compiler()
    if compiler is None:
        return None, f"no C compiler ({os.environ.get('CC', 'cc')}) on PATH"
    try:
        library = ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"building {SOURCE.name} failed: {error}"
    function = library.loopcoder_int8_vnni_mm
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    sums = library.loopcoder_int8_row_sums
    sums.restype = None
    sums.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    return library, ""


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the system (glibc's malloc_trim). Loading allocates and frees
    many blocks of a few MB (quantizing, timing kernels); glibc keeps them in its heap, where the weights
    allocated after them pin the pages: ~1 GB of a 7B's int8 load stayed resident that way."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def int8_vnni_unavailable() -> str:
    """'' when int8_vnni_mm runs here, else the reason it does not."""
    return _library()[1]


def _loaded(caller: str) -> ctypes.CDLL:
    library, why = _library()
    if library is None:
        raise RuntimeError(f"{caller} is not available: {why}")
    return library


def int8_row_sums(weight: torch.Tensor) -> torch.Tensor:
    """weight [N, K] int8 (contiguous) -> each row's sum [N] int32, without widening the whole weight first
    (torch's sum(dtype=int32) does, and a 7B's lm_head then costs 1.6 GB at load)."""
    library = _loaded("int8_row_sums")
    sums = torch.empty(weight.shape[0], dtype=torch.int32)
    library.loopcoder_int8_row_sums(weight.data_ptr(), weight.shape[0], weight.shape[1], sums.data_ptr())
    return sums


@torch.library.custom_op("loopcoder::int8_vnni_mm", mutates_args=())
def int8_vnni_mm(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, rowsum: torch.Tensor) -> torch.Tensor:
    """x [M, K] (bf16 or float32, contiguous) @ (weight [N, K] int8 * scale [N] float32)^T -> [M, N] in x's dtype;
    rowsum [N] int32 is each weight row's sum."""
    library = _loaded("int8_vnni_mm")
    x = x.contiguous()
    rows, in_features = x.shape
    out = torch.empty(rows, weight.shape[0], dtype=x.dtype)
    status = library.loopcoder_int8_vnni_mm(x.data_ptr(), DTYPE_CODES[x.dtype], rows, in_features, weight.data_ptr(),
                                            scale.data_ptr(), rowsum.data_ptr(), out.data_ptr(), weight.shape[0],
                                            torch.get_num_threads())
    if status:
        raise MemoryError(f"int8_vnni_mm could not allocate its buffers for {rows} rows of {in_features}")
    return out


@int8_vnni_mm.register_fake
def _(x, weight, scale, rowsum):
    return x.new_empty(x.shape[0], weight.shape[0])
