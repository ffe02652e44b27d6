"""One timing rule for every benchmark: median wall clock of `repeats` calls after `warmup` calls,
with the device synchronised before each clock reading (CUDA launches are asynchronous)."""
import statistics
import time

import torch


def median_ms(fn, device, warmup, repeats):
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)
