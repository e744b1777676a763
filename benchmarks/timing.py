"""Timing helpers shared by bench.py and tune.py.

Every function here that touches the GPU does so only when called; importing
this module makes no CUDA call.

* Device time per call: ``calls`` calls captured in one CUDA graph, the graph
  replayed between two CUDA events, the elapsed time divided by the calls; the
  median over repeats is the number to report. Each timed batch is queued behind
  a short GPU sleep, so the replays run back to back even if the host is slow to
  submit them (the sleep is outside the events). While one call's bytes are
  under ``ROTATE_L2`` times the L2 cache, the calls cycle through several input
  sets (and keep that many outputs alive), so a small shape is not measured
  out of the cache.
* Host time per call: ``calls`` back-to-back eager calls timed with
  ``time.perf_counter_ns``, one synchronize at the end, divided by the calls.
* Copy bandwidth: ``dst.copy_(src)`` of 1 GiB, bytes read plus bytes written.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch

ROTATE_L2 = 4  # rotate input sets until their bytes exceed this many L2 caches
MAX_SETS = 256  # ... but never more sets than this
L2_FALLBACK_BYTES = 50 * 2**20  # H100, when the device properties do not say
SLEEP_CYCLES = 1_000_000  # about 0.5 ms of GPU clock: time for the host to queue a batch of replays

# (rtol, atol) against torch eager: bf16/fp16 allow a couple of ulps of y, since
# llama casting rounds x_hat before the weight product and torch rounds once.
TOLERANCE = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (2e-2, 2e-2),
}

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def element_bytes(dtype: str) -> int:
    return torch.empty((), dtype=DTYPES[dtype]).element_size()


def l2_bytes() -> int:
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    return int(getattr(properties, "L2_cache_size", 0) or L2_FALLBACK_BYTES)


def rotation_sets(call_bytes: int, l2: int) -> int:
    """How many input sets the graph cycles through so that a call does not find its data in L2."""
    if call_bytes >= ROTATE_L2 * l2:
        return 1
    return max(1, min(MAX_SETS, math.ceil(ROTATE_L2 * l2 / max(call_bytes, 1))))


def calls_per_graph(call_bytes: int) -> int:
    """20 calls per graph; fewer for large shapes (at least 2), where one call already takes long."""
    if call_bytes < 64 * 2**20:
        return 20
    return max(2, min(20, (1 << 30) // call_bytes))


def make_inputs(rows: int, cols: int, dtype: str, sets: int, seed: int = 0) -> list[tuple]:
    """``sets`` (x, r, w) triples on the GPU; every set shares one weight (it is small)."""
    generator = torch.Generator(device="cuda").manual_seed(seed)
    torch_dtype = DTYPES[dtype]
    w = (1.0 + 0.1 * torch.randn(cols, device="cuda", generator=generator)).to(torch_dtype)
    result = []
    for _ in range(sets):
        x = torch.randn(rows, cols, device="cuda", generator=generator).to(torch_dtype)
        r = torch.randn(rows, cols, device="cuda", generator=generator).to(torch_dtype)
        result.append((x, r, w))
    return result


def graph_time_us(fn: Callable, sets: Sequence[tuple], calls: int, reps: int, min_ms: float = 1.0) -> list[float]:
    """Device microseconds per call of ``fn(*sets[i % k])``, one sample per repeat.

    ``fn`` must already be warmed up (compiled) on these shapes: nothing may
    compile inside the capture. The outputs of the last ``k`` calls stay alive
    during the capture, so rotated calls also write to distinct memory.
    """
    k = len(sets)
    calls = k * math.ceil(calls / k)
    keep: list = [None] * k
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        for i in range(calls):
            keep[i % k] = fn(*sets[i % k])
    del keep
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    once_ms = max(start.elapsed_time(end), 1e-3)
    replays = max(1, min(1000, math.ceil(min_ms / once_ms)))
    sleep = getattr(torch.cuda, "_sleep", None)
    samples = []
    for _ in range(reps):
        if sleep is not None:
            sleep(SLEEP_CYCLES)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / (replays * calls))
    del graph
    return samples


def host_time_us(
    fn: Callable, args: tuple = (), kwargs: dict | None = None, calls: int = 2000, reps: int = 7, warmup: int = 200
) -> list[float]:
    """Host microseconds per eager call: back-to-back calls, one synchronize at the end, per repeat."""
    kwargs = kwargs or {}
    for _ in range(warmup):
        fn(*args, **kwargs)
    torch.cuda.synchronize()
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    samples = []
    try:
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            for _ in range(calls):
                fn(*args, **kwargs)
            torch.cuda.synchronize()
            samples.append((time.perf_counter_ns() - t0) / calls / 1e3)
    finally:
        if was_enabled:
            gc.enable()
    return samples


def copy_bandwidth(nbytes: int = 1 << 30, reps: int = 10, copies: int = 5) -> dict:
    """Device-to-device copy bandwidth in GB/s (bytes read + written), median of ``reps``."""
    src = torch.ones(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    samples_ms = []
    for _ in range(reps):
        start.record()
        for _ in range(copies):
            dst.copy_(src)
        end.record()
        end.synchronize()
        samples_ms.append(start.elapsed_time(end) / copies)
    del src, dst
    torch.cuda.empty_cache()
    ms = median(samples_ms)
    return {"bytes": nbytes, "ms": ms, "gbps": 2 * nbytes / (ms * 1e-3) / 1e9, "samples_ms": samples_ms}


def same_bytes_copy_gbps(call_bytes: int, l2: int, reps: int) -> float:
    """GB/s of a device-to-device copy moving ``call_bytes`` (half read, half written), timed as the
    ops are: CUDA-graph replay, buffers rotated past L2 the same way. What the copy bandwidth
    (of 1 GiB) becomes at an op's own size, ramp-up and tail included. The faster of the exact size
    and the size rounded down to a whole MiB: on an H200 torch's copy of 2^28 + 4096 bytes (and of
    2^29 + 8192) ran at 64% of the rate of 2^28 + 8192, in every dtype and buffer placement tried,
    a quirk of that size, not of the memory."""
    best = 0.0
    for half in {call_bytes // 2, call_bytes // 2 >> 20 << 20} - {0}:
        sets = [
            (torch.ones(half, dtype=torch.uint8, device="cuda"), torch.empty(half, dtype=torch.uint8, device="cuda"))
            for _ in range(rotation_sets(2 * half, l2))
        ]
        us = median(graph_time_us(lambda src, dst: dst.copy_(src), sets, calls_per_graph(2 * half), reps))
        best = max(best, 2 * half / (us * 1e-6) / 1e9)
        del sets
        torch.cuda.empty_cache()
    return best


def compare(out: torch.Tensor, ref: torch.Tensor) -> tuple[bool, float]:
    """(within tolerance everywhere, largest absolute difference), in row chunks to bound memory."""
    rtol, atol = TOLERANCE[ref.dtype]
    out2 = out.reshape(-1, out.shape[-1])
    ref2 = ref.reshape(-1, ref.shape[-1])
    step = max(1, (1 << 24) // max(1, ref2.shape[1]))
    ok, worst = True, 0.0
    for lo in range(0, ref2.shape[0], step):
        a = out2[lo : lo + step].float()
        b = ref2[lo : lo + step].float()
        err = torch.nan_to_num((a - b).abs(), nan=math.inf)
        worst = max(worst, float(err.max()))
        if bool((~(err <= atol + rtol * b.abs())).any()):
            ok = False
    return ok, worst
