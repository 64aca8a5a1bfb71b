"""Peak resident memory of a block of code on Linux, for CPU memory comparisons.

``/proc/self/clear_refs`` accepts "5" to reset the kernel's high-water mark (VmHWM) of this
process; the block's peak is VmHWM afterwards, and its increase is that minus the resident size
(VmRSS) on entry. On entry, glibc's ``malloc_trim`` first hands freed heap pages back to the
kernel, so memory a previous step freed (but the allocator kept) does not hide this block's
peak. Used by both sides of the peer comparison (no third-party imports).
"""

from __future__ import annotations

import ctypes
import gc


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakRSS:
    def __enter__(self):
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc: the peak is then a lower bound
            pass
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.start_bytes = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        self.peak_bytes = _status_kib("VmHWM") * 1024
        self.increase_bytes = self.peak_bytes - self.start_bytes
        return False
