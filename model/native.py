"""Native CPU kernels: built from their C source at first use, cached, called as torch custom ops.

- `int8_vnni_mm` (int8_vnni.c) multiplies by an int8 weight with AVX-512 VNNI.
- `dense_mm` (dense_avx512.c) multiplies a few rows (decode, draft checks) by a float32 or bfloat16
  weight, reading it once for up to 4 rows at a time (model/dense.py decides where it is used).
Each library is compiled with the system C compiler (`$CC`, else `cc`) into ~/.cache/loopcoder/kernels/,
named by the hash of its source, flags and compiler, so an upgrade rebuilds it and concurrent processes
agree (written to a temporary name, then renamed). Where the CPU lacks the instructions, no compiler is
found or the build fails, `int8_vnni_unavailable()` / `dense_unavailable()` say why and torch's kernels
are used.
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
from dataclasses import dataclass
from pathlib import Path

import torch

CACHE_DIR = Path("~/.cache/loopcoder/kernels")
BUILD_TIMEOUT_S = 120
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1}  # int8_vnni.c's DTYPE_*
COMMON_FLAGS = ("-O3", "-std=gnu11", "-fopenmp", "-shared", "-fPIC")
# Run on a fresh build in a child process before it is cached or loaded here: a library that dies with
# SIGILL (a CPU or hypervisor that reports the instructions but faults on them) or computes wrong would
# otherwise kill or mislead the user's process. Inputs are chosen so that the products are exact.
INT8_SELF_TEST = """
import ctypes, sys
K, N = 70, 5
library = ctypes.CDLL(sys.argv[1])
x = (ctypes.c_float * K)(*([32767.0] + [float(k % 7 - 3) for k in range(1, K)]))  # on the 16-bit grid: scale 1
w = (ctypes.c_int8 * (N * K))(*[(i * 29) % 255 - 127 for i in range(N * K)])
scale, sums, out = (ctypes.c_float * N)(*[1.0] * N), (ctypes.c_int32 * N)(), (ctypes.c_float * N)()
library.loopcoder_int8_row_sums(w, N, K, sums)
status = library.loopcoder_int8_vnni_mm(x, 0, 1, K, w, scale, sums, out, N, 1)
want = [sum(x[k] * w[n * K + k] for k in range(K)) for n in range(N)]
sys.exit(0 if status == 0 and list(out) == want else 3)
"""
DENSE_SELF_TEST = """
import ctypes, struct, sys
M, K, N = 5, 70, 5  # a pass of 4 rows of x and one of 1; K tails in both dtypes; a 1-row weight block
library = ctypes.CDLL(sys.argv[1])
x = [float((i * 7) % 9 - 4) for i in range(M * K)]  # small integers: exact in bf16, products exact in float32
w = [float((i * 5) % 11 - 5) for i in range(N * K)]
want = [sum(x[m * K + k] * w[n * K + k] for k in range(K)) for m in range(M) for n in range(N)]
bits = lambda values: (ctypes.c_uint16 * len(values))(*[struct.unpack("<I", struct.pack("<f", v))[0] >> 16 for v in values])
for function, pack in ((library.loopcoder_dense_mm_f32, lambda v: (ctypes.c_float * len(v))(*v)),
                       (library.loopcoder_dense_mm_bf16, bits)):
    out = (ctypes.c_float * (M * N))()
    function(pack(x), M, K, pack(w), N, out, 1)
    if list(out) != want:
        sys.exit(3)
"""
_POINTER, _INT = ctypes.c_void_p, ctypes.c_int


@dataclass(frozen=True)
class Library:
    """One C source built into one shared library, and what it takes to run it."""
    source: Path
    cpu_flags: tuple[str, ...]  # as /proc/cpuinfo spells them
    compile_flags: tuple[str, ...]
    self_test: str
    functions: tuple[tuple[str, type | None, tuple], ...]  # (name, restype, argtypes) for ctypes


INT8_VNNI = Library(
    Path(__file__).with_name("int8_vnni.c"), ("avx512f", "avx512bw", "avx512_vnni"),
    ("-mavx512f", "-mavx512bw", "-mavx512vnni"), INT8_SELF_TEST,
    (("loopcoder_int8_vnni_mm", _INT, (_POINTER, _INT, _INT, _INT, _POINTER, _POINTER, _POINTER, _POINTER, _INT, _INT)),
     ("loopcoder_int8_row_sums", None, (_POINTER, _INT, _INT, _POINTER))))
DENSE = Library(
    Path(__file__).with_name("dense_avx512.c"), ("avx512f", "avx512bw", "avx512_bf16"),
    ("-mavx512f", "-mavx512bw", "-mavx512bf16"), DENSE_SELF_TEST,
    tuple((name, None, (_POINTER, _INT, _INT, _POINTER, _INT, _POINTER, _INT))
          for name in ("loopcoder_dense_mm_f32", "loopcoder_dense_mm_bf16")))


def _missing_cpu_flags(wanted: tuple[str, ...]) -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return list(wanted)
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in wanted if flag not in flags]


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


def _build(compiler: str, spec: Library) -> Path:
    """The cached shared library, compiled now if this source/flags/compiler has none yet."""
    flags = (*COMMON_FLAGS, *spec.compile_flags)
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    digest = hashlib.sha256("\0".join([spec.source.read_text(), *flags, version]).encode()).hexdigest()[:16]
    directory = CACHE_DIR.expanduser()
    library = directory / f"{spec.source.stem}-{digest}.so"
    if library.exists():
        return library
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle, partial = tempfile.mkstemp(dir=directory, prefix=library.name, suffix=".partial")
    os.close(handle)
    try:
        done = subprocess.run([compiler, *flags, str(spec.source), "-o", partial],
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode:
            raise OSError(f"{compiler} failed: {done.stderr.strip()[-800:]}")
        _self_test(partial, spec)
        os.replace(partial, library)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return library


def _self_test(library: str, spec: Library) -> None:
    done = subprocess.run([sys.executable, "-c", spec.self_test, library], capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S)
    if done.returncode < 0:
        raise OSError(f"the built kernel died with {signal.Signals(-done.returncode).name} in its self-test "
                      f"(this CPU or its hypervisor does not run {', '.join(spec.cpu_flags)})")
    if done.returncode:
        raise OSError(f"the built kernel gave wrong products in its self-test: {done.stderr.strip()[-300:]}")


@functools.cache
def _library(spec: Library) -> tuple[ctypes.CDLL | None, str]:
    """(the loaded library, '') or (None, why not)."""
    missing = _missing_cpu_flags(spec.cpu_flags)
    if missing:
        return None, f"this CPU lacks {', '.join(missing)}"
    compiler = _compiler()
    if compiler is None:
        return None, f"no C compiler ({os.environ.get('CC', 'cc')}) on PATH"
    try:
        library = ctypes.CDLL(str(_build(compiler, spec)))
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"building {spec.source.name} failed: {error}"
    for name, restype, argtypes in spec.functions:
        function = getattr(library, name)
        function.restype, function.argtypes = restype, list(argtypes)
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
    return _library(INT8_VNNI)[1]


def dense_unavailable() -> str:
    """'' when dense_mm runs here, else the reason it does not."""
    return _library(DENSE)[1]


def _loaded(caller: str, spec: Library) -> ctypes.CDLL:
    library, why = _library(spec)
    if library is None:
        raise RuntimeError(f"{caller} is not available: {why}")
    return library


def int8_row_sums(weight: torch.Tensor) -> torch.Tensor:
    """weight [N, K] int8 (contiguous) -> each row's sum [N] int32, without widening the whole weight first
    (torch's sum(dtype=int32) does, and a 7B's lm_head then costs 1.6 GB at load)."""
    library = _loaded("int8_row_sums", INT8_VNNI)
    sums = torch.empty(weight.shape[0], dtype=torch.int32)
    library.loopcoder_int8_row_sums(weight.data_ptr(), weight.shape[0], weight.shape[1], sums.data_ptr())
    return sums


@torch.library.custom_op("loopcoder::int8_vnni_mm", mutates_args=())
def int8_vnni_mm(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, rowsum: torch.Tensor) -> torch.Tensor:
    """x [M, K] (bf16 or float32, contiguous) @ (weight [N, K] int8 * scale [N] float32)^T -> [M, N] in x's dtype;
    rowsum [N] int32 is each weight row's sum."""
    library = _loaded("int8_vnni_mm", INT8_VNNI)
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


DENSE_FUNCTIONS = {torch.float32: "loopcoder_dense_mm_f32", torch.bfloat16: "loopcoder_dense_mm_bf16"}


def dense_mm_eager(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """dense_mm without the dispatcher: what eager decode calls (the custom op's dispatch costs ~10 us a call)."""
    if (x.dtype != weight.dtype or x.dtype not in DENSE_FUNCTIONS or x.dim() != 2 or x.shape[1] != weight.shape[1]
            or x.device.type != "cpu" or weight.device.type != "cpu"):
        raise ValueError(f"dense_mm multiplies float32 or bfloat16 x [M, K] by a weight [N, K] of the same dtype, "
                         f"both on the CPU; got x {tuple(x.shape)} {x.dtype} on {x.device} and weight "
                         f"{tuple(weight.shape)} {weight.dtype} on {weight.device}")
    function = getattr(_loaded("dense_mm", DENSE), DENSE_FUNCTIONS[x.dtype])
    x = x.contiguous()
    out = torch.empty(x.shape[0], weight.shape[0], dtype=torch.float32)  # [M, N]
    function(x.data_ptr(), x.shape[0], x.shape[1], weight.contiguous().data_ptr(), weight.shape[0], out.data_ptr(),
             torch.get_num_threads())
    return out if x.dtype == torch.float32 else out.to(x.dtype)


@torch.library.custom_op("loopcoder::dense_mm", mutates_args=())
def dense_mm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [M, K] @ weight [N, K]^T -> [M, N], both float32 or both bfloat16; for few rows (dense_avx512.c)."""
    return dense_mm_eager(x, weight)


@dense_mm.register_fake
def _(x, weight):
    return x.new_empty(x.shape[0], weight.shape[0])
