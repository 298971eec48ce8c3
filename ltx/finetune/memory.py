"""Memory for `instance_batch_size=auto`: what is available, what a call costs at its peak, and the
largest instance batch that fits."""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

#: `instance_batch_size=auto` never picks more than this per device type: on 2-16 CPU cores
#: throughput stops growing at about 32 instances (bench_finetune.py), so more only costs memory.
MAX_AUTO_BATCH = {"cpu": 32, "cuda": 256}
#: `auto` when the memory cannot be measured
FALLBACK_BATCH = 8
#: share of the available memory that `auto` plans for when no `memory_budget` is given
CPU_MEMORY_SHARE, CUDA_MEMORY_SHARE = 0.5, 0.85


def available_memory(device: torch.device) -> int:
    """Bytes free for new allocations: free GPU memory (plus what PyTorch caches unused), or the
    host's available RAM (`MemAvailable`)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def peak_memory(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated by tensors while `fn()` runs, above what was allocated before.

    CUDA: the caching allocator's peak statistic. CPU: the running sum of the allocations and
    frees that `torch.profiler` records (per op, so transients inside one op are not seen).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return max(int(torch.cuda.max_memory_allocated(device) - before), 0)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return int(peak)


def largest_fitting_batch(run: Callable[[int], Any], device: torch.device, *, memory_budget: float | None,
                          budget: int | None = None, cap: int | None = None) -> dict[str, Any]:
    """The largest power of two B ≤ `cap` (default `MAX_AUTO_BATCH` of the device type) for which
    `run(B)` (one finetuning step of B instances) fits `budget` bytes, with the numbers behind it.

    Measures the peak memory of `run(1)` and `run(2)`, fits peak(B) = fixed + B · per_instance and
    solves for the budget (default: `memory_budget` GiB, else 85 % of free GPU memory / 50 % of
    available RAM). On CUDA the choice is then tried once, halving on out-of-memory.
    """
    device = torch.device(device)
    if budget is None:
        share = CUDA_MEMORY_SHARE if device.type == "cuda" else CPU_MEMORY_SHARE
        budget = int(memory_budget * 2**30) if memory_budget else int(share * available_memory(device))
    cap = cap or MAX_AUTO_BATCH.get(device.type, MAX_AUTO_BATCH["cuda"])
    try:
        peaks = [peak_memory(lambda b=b: run(b), device) for b in (1, 2)]
    except RuntimeError as err:  # e.g. another profiler is already running
        fallback = min(FALLBACK_BATCH, cap)
        warnings.warn(f"instance_batch_size=auto: could not measure memory ({err}); using {fallback}",
                      stacklevel=3)
        return {"device": str(device), "budget": budget, "instance_batch_size": fallback}
    per_instance = max(peaks[1] - peaks[0], 1)
    fixed = max(peaks[0] - per_instance, 0)
    fits = max((budget - fixed) // per_instance, 1)
    chosen = 2 ** int(math.log2(min(fits, cap)))
    while device.type == "cuda" and chosen > 1:
        try:
            run(chosen)
            break
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            chosen //= 2
    log.info("finetune instance_batch_size=auto: %d (%.1f MiB per instance, %.1f MiB fixed, budget %.1f GiB, %s)",
             chosen, per_instance / 2**20, fixed / 2**20, budget / 2**30, device)
    return {"device": str(device), "budget": budget, "fixed": fixed, "per_instance": per_instance,
            "instance_batch_size": chosen}
