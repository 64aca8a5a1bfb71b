"""Instruments shared by both sides of the peer comparison (no diffexp or trl imports).

``PeakRSS``: peak resident memory of a block of code on Linux, for CPU memory comparisons.

``/proc/self/clear_refs`` accepts "5" to reset the kernel's high-water mark (VmHWM) of this
process; the block's peak is VmHWM afterwards, and its increase is that minus the resident size
(VmRSS) on entry. On entry, glibc's ``malloc_trim`` first hands freed heap pages back to the
kernel, so memory a previous step freed (but the allocator kept) does not hide this block's
peak. Used by both sides of the peer comparison (no third-party imports).
"""

from __future__ import annotations

import ctypes
import gc
import time


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


class UNetClock:
    """Wall time inside UNet forward calls (outermost only) and inside backward passes; on the CPU
    both run synchronously, so wall time is compute time. The backward of the DDPO/AlignProp
    losses is UNet backward but for a few elementwise log-prob / reward ops (and, for AlignProp,
    the VAE decoder's backward)."""

    def __init__(self):
        import torch
        from diffusers import UNet2DConditionModel

        self.forward_s = self.backward_s = 0.0
        self._depth = 0
        clock = self
        real_forward, real_backward = UNet2DConditionModel.forward, torch.Tensor.backward

        def forward(module, *args, **kwargs):
            clock._depth += 1
            start = time.perf_counter()
            try:
                return real_forward(module, *args, **kwargs)
            finally:
                clock._depth -= 1
                if clock._depth == 0:
                    clock.forward_s += time.perf_counter() - start

        def backward(tensor, *args, **kwargs):
            start = time.perf_counter()
            try:
                return real_backward(tensor, *args, **kwargs)
            finally:
                clock.backward_s += time.perf_counter() - start

        self._restore = lambda: (
            setattr(UNet2DConditionModel, "forward", real_forward),
            setattr(torch.Tensor, "backward", real_backward),
        )
        UNet2DConditionModel.forward, torch.Tensor.backward = forward, backward

    def close(self) -> None:
        """Put the original forward/backward back (the clock patches them process-wide)."""
        self._restore()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s

    def reset(self) -> None:
        self.forward_s = self.backward_s = 0.0
