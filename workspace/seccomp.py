"""A seccomp filter for the local sandbox: the kernel interfaces no repository's commands need, refused.

bubblewrap applies no filter of its own. Commands in the sandbox already run
without capabilities, in their own user, PID, IPC, UTS, cgroup and network
namespaces, so most privileged calls fail anyway; what stays reachable is
kernel code an unprivileged process may call, the surface kernel exploits
use. The filter answers EPERM to those calls (as Docker's default profile
and Flatpak do): eBPF, perf events, userfaultfd, io_uring, the kernel
keyrings, module loading, kexec, namespace and mount calls, file handles,
and a few system-wide switches. Calls of another architecture's ABI (32-bit
`int 0x80` on x86-64) kill the process, so the table cannot be bypassed.

The program is compiled once per process with libseccomp (through ctypes:
the C library docker.io and systemd already bring); each sandbox keeps it in
its state directory and bwrap loads it from a file descriptor (`--seccomp FD`)
for every command. Without libseccomp the sandbox runs unfiltered, after a
warning.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import tempfile
from functools import lru_cache

REFUSED = (
    "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "unshare", "setns", "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at",
    "acct", "swapon", "swapoff", "reboot", "quotactl", "syslog", "vhangup", "iopl", "ioperm", "lookup_dcookie",
)
_ALLOW = 0x7FFF0000  # SCMP_ACT_ALLOW
_ERRNO = 0x00050000  # SCMP_ACT_ERRNO(e) = this | e


class SeccompUnavailable(RuntimeError):
    """libseccomp is missing or refused the program; the message says which."""


@lru_cache(maxsize=1)
def program() -> bytes:
    """The compiled filter (classic BPF for this architecture), built once per process."""
    lib = _library()
    ctx = lib.seccomp_init(_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        for name in REFUSED:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a call of this architecture (or older than this libseccomp)
                continue
            if lib.seccomp_rule_add_array(ctx, _ERRNO | errno.EPERM, number, 0, None) != 0:
                raise SeccompUnavailable(f"libseccomp refused the rule for {name}")
        with tempfile.TemporaryFile() as f:
            if lib.seccomp_export_bpf(ctx, f.fileno()) != 0:
                raise SeccompUnavailable("seccomp_export_bpf failed")
            f.seek(0)
            return f.read()
    finally:
        lib.seccomp_release(ctx)


def available() -> bool:
    try:
        program()
        return True
    except SeccompUnavailable:
        return False


def write_program(path: str) -> bool:
    """Write the filter to `path` for bwrap's --seccomp; False (after one warning) when libseccomp is missing."""
    try:
        data = program()
    except SeccompUnavailable as e:
        _warn_once(str(e))
        return False
    with open(path, "wb") as f:
        f.write(data)
    return True


@lru_cache(maxsize=1)
def _warn_once(reason: str) -> None:
    logging.getLogger(__name__).warning("the local sandbox runs without its seccomp filter: %s", reason)


def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise SeccompUnavailable(f"libseccomp is not installed ({e}); apt-get install libseccomp2") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.restype = None
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib
