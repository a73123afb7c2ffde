"""Peak memory of a stretch of work, on a CUDA device or on the host (for benchmarks/gpu_smoke.py and the tests
that hold the memory plan to what a run really uses).

CUDA: torch's caching allocator's peak of allocated bytes. CPU: torch has no allocator statistics there, and
tracemalloc does not see torch's allocations, so the host's peak resident set is read instead: the kernel's
high-water mark (VmHWM in /proc/self/status), reset by writing 5 to /proc/self/clear_refs (Linux). It counts
what the process really holds only if freed tensors go back to the kernel: glibc keeps freed heap memory
unless large blocks are mmapped, so the measured process must start with HOST_MALLOC_ENV (the Makefile's own
malloc settings, which keep memory, would hide every free).
"""

from __future__ import annotations

from pathlib import Path

import torch

# mmap every block of 64 KiB or more (no dynamic threshold), so a freed tensor's memory leaves the process
HOST_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_MMAP_MAX_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
CPU_METHOD = (
    "peak resident set (VmHWM of /proc/self/status, reset through /proc/self/clear_refs) minus the "
    "resident set at the start; glibc malloc told to mmap blocks >= 64 KiB so frees return to the kernel"
)
CUDA_METHOD = "torch.cuda.max_memory_allocated minus memory_allocated at the start (the caching allocator's peak)"


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


class PeakMemory:
    """with PeakMemory(device) as pm: ...; pm.peak_bytes is the peak above what was in use at the start."""

    def __init__(self, device: str = "cpu"):
        self.cuda = str(device).startswith("cuda")
        self.method = CUDA_METHOD if self.cuda else CPU_METHOD
        self.peak_bytes = None

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")
            self.start = _status("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self.start
        else:
            self.peak_bytes = _status("VmHWM") - self.start
        return False
