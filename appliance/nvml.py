"""GPU memory and utilisation from NVIDIA's NVML, read at scrape time through ctypes.

NVML is the library nvidia-smi reads (`libnvidia-ml.so.1`, installed with the driver). Where
it is missing, or reports no device, `Nvml.open()` returns None and the GPU metrics are
absent rather than zero: an alert on GPU memory must not fire on a host without a GPU.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass

log = logging.getLogger("keep.metrics")

_LIBRARY = "libnvidia-ml.so.1"
_SUCCESS = 0


class _Memory(ctypes.Structure):
    _fields_ = (
        ("total", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    )


class _Utilization(ctypes.Structure):
    _fields_ = (("gpu", ctypes.c_uint), ("memory", ctypes.c_uint))


@dataclass(frozen=True)
class GpuReading:
    index: int
    memory_used_bytes: int
    memory_total_bytes: int
    utilization: float  # 0..1, the share of the last sample period a kernel ran


class Nvml:
    def __init__(self, lib: ctypes.CDLL, count: int) -> None:
        self._lib = lib
        self.count = count

    @classmethod
    def open(cls, library: str = _LIBRARY) -> Nvml | None:
        try:
            lib = ctypes.CDLL(library)
        except OSError:
            return None
        count = ctypes.c_uint(0)
        if lib.nvmlInit_v2() != _SUCCESS:
            log.warning("NVML is present but does not initialise; GPU metrics are absent")
            return None
        if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != _SUCCESS or count.value == 0:
            return None
        return cls(lib, count.value)

    def read(self) -> list[GpuReading]:
        """One reading per device that answers; a device that errors is left out."""
        out: list[GpuReading] = []
        for index in range(self.count):
            handle = ctypes.c_void_p()
            memory = _Memory()
            busy = _Utilization()
            if (
                self._lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != _SUCCESS
                or self._lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != _SUCCESS
                or self._lib.nvmlDeviceGetUtilizationRates(handle, ctypes.byref(busy)) != _SUCCESS
            ):
                continue
            out.append(GpuReading(index, memory.used, memory.total, busy.gpu / 100.0))
        return out
