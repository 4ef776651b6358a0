"""Timing and memory probes shared by the videomt-jax and Hugging Face runners.

A *mode* (online, clip, batch) is timed as `iters` repetitions of one `Unit` of work (a pass of
single-frame calls over a clip, one clip call, one batch call), after `warmup` untimed ones; each
repetition ends with a full device sync, so the times are wall-clock latencies of finished work.
The implementations take turns repetition by repetition (`time_interleaved`), so a machine whose
load drifts (a shared CPU) slows them alike and the ratios stay meaningful.
Memory: on GPU the runner reads the device allocator's peak; on CPU a sampling thread records the
peak resident set size (RSS, whole process: both models live in it) while the unit runs.
"""

from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

MIB = 1024 * 1024
RSS_POLL_S = 0.005


@dataclass
class ModeResult:
    """One timed mode of one implementation."""

    frames_per_rep: int  # frames processed by one repetition
    flops_per_rep: int  # analytic FLOPs of one repetition
    times_s: list[float]  # wall time of every timed repetition
    peak_mem_mb: float | None = None
    compile_s: float | None = None  # first-call overhead (trace + compile), None where nothing compiles
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def fps(self) -> float:
        return self.frames_per_rep / self.median_s

    @property
    def tflops(self) -> float:
        return self.flops_per_rep / self.median_s / 1e12

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(median_s=self.median_s, fps=self.fps, tflops=self.tflops)
        return out


def _current_rss() -> int:
    """Resident set size of this process in bytes (psutil if present, else /proc)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss_mb() -> float:
    """Peak RSS of the whole process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    """Context manager recording the peak RSS (MiB) seen while it is open."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _current_rss())
            self._stop.wait(RSS_POLL_S)

    def __enter__(self) -> RssSampler:
        self.peak = _current_rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _current_rss())

    @property
    def peak_mb(self) -> float:
        return self.peak / MIB


def _no_peak() -> float | None:
    return None


def _no_reset() -> None:
    return None


@dataclass
class Unit:
    """One repetition of a mode, ready to time (compiled and warmed up by its runner)."""

    run: Callable[[], Any]  # returns only after the device finished
    frames: int
    flops: int
    first_call_s: float  # wall time of the first (compiling) call
    compile_s: float | None = None  # measured apart (jit lower + compile); None: first call - median
    compiles: bool = True  # False: nothing compiles (eager torch), no compile time to report
    device_peak_mb: Callable[[], float | None] = _no_peak  # accelerator allocator peak (None on CPU)
    reset_peak: Callable[[], None] = _no_reset
    extra: dict[str, Any] = field(default_factory=dict)


def warm_up(run: Callable[[], Any], warmup: int) -> float:
    """Call `run` `warmup` times (>= 1); returns the first call's wall time (compile included)."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        run()
    return first


def time_interleaved(units: dict[str, Unit], iters: int) -> dict[str, ModeResult]:
    """Time every unit `iters` times, taking turns; one ModeResult per unit name."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    times: dict[str, list[float]] = {name: [] for name in units}
    peaks: dict[str, float] = {name: 0.0 for name in units}
    for _ in range(iters):
        for name, unit in units.items():
            unit.reset_peak()
            with RssSampler() as rss:
                start = time.perf_counter()
                unit.run()
                times[name].append(time.perf_counter() - start)
            device_peak = unit.device_peak_mb()
            peaks[name] = max(peaks[name], rss.peak_mb if device_peak is None else device_peak)
    out = {}
    for name, unit in units.items():
        result = ModeResult(unit.frames, unit.flops, times[name], peaks[name], unit.compile_s, dict(unit.extra))
        if unit.compile_s is None and unit.compiles:
            result.compile_s = max(unit.first_call_s - result.median_s, 0.0)
        out[name] = result
    return out
