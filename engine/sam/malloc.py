"""glibc malloc settings for a process that runs torch on the CPU.

Torch's CPU allocator takes every tensor from malloc and gives it back on free. With glibc's
defaults a block of more than 128 KiB is mapped for the allocation and unmapped on free (the
threshold then rises to the size of the freed block, but the heap top above the 2 x
threshold trim limit still goes back to the kernel), so the decoder's next 4 MiB tensor of the
same shape is page-faulted in and zeroed by the kernel again, page by page. The operations of a
`vit_b`-sized mask decoder spend more time on that than on their arithmetic on a 2-core VM.

`tune_malloc` keeps such blocks in the process: blocks up to 32 MiB come from the heap and up
to 256 MiB of free heap top is kept for reuse (glibc's ``M_MMAP_THRESHOLD`` and
``M_TRIM_THRESHOLD``). It matters most where only the decoder runs, as in a web process: a
process that ran the image encoder has freed blocks large enough to raise glibc's own
thresholds to about the same. Measured on a 2-core VM: `vit_b` prompt encoder + decoder on a
stored embedding 35.6 -> 31 ms; `vit_b` image embedding (`bench.sam_speed`) 5.68 / 5.75 ->
5.43 s (docs/configuration.md, ``MASKLOOP_TUNE_MALLOC``). The cost is up to 256 MiB of freed
memory that the process keeps instead of returning.

The ``config`` package calls it on import, so every process of the platform runs with it: the
web server, the Celery workers, ``manage.py``, and a benchmark that builds a platform (whose
bare calls thus share the server's settings). The training CLI and ``bench.sam_speed``, which
load no Django, call it themselves.
Anything other than glibc on Linux is left alone, and so is a process started with glibc's own
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (the operator's choice wins) or with
``MASKLOOP_TUNE_MALLOC=0``.
"""

import ctypes
import os
import platform

# mallopt(3) parameter numbers (glibc malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's ceiling for this parameter on 64-bit
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024

_OPERATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_applied = False


def tune_malloc() -> bool:
    """Apply the settings above once per process; whether they are in effect."""
    global _applied
    if _applied:
        return True
    if os.environ.get("MASKLOOP_TUNE_MALLOC", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if any(name in os.environ for name in _OPERATOR_SETTINGS):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # The mmap threshold first: setting either one turns glibc's dynamic adjustment off, and
    # the trim threshold alone would leave every block above 128 KiB mapped and unmapped.
    if libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        return False
    if libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) != 1:
        return False
    _applied = True
    return True


def tuned_env() -> dict[str, str]:
    """The same settings as glibc environment variables, for a child process that does not
    run this module (a benchmark's reference interpreter); empty when they are not in effect
    here, so that both sides of a comparison run with the same allocator settings."""
    if not _applied:
        return {}
    return {
        "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES),
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES),
    }
