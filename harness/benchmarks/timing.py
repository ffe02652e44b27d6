"""How benchmarks time things: `median_ms`, the median wall clock of `repeats` calls after `warmup`
calls with the device synchronised before each clock reading (CUDA launches are asynchronous);
`graph_median_ms`, the same over replays of a CUDA graph captured from the function (by the
`CapturedCall` that captures training updates), which leaves out the host's per-launch work; and
`CallClock`, the time a loop spends inside one method, without adding synchronisation to the loop."""
import contextlib
import statistics
import time

import torch

from agents.cuda_graph import CapturedCall


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


def graph_median_ms(fn, device, warmup, repeats):
    """`median_ms` of replaying one CUDA graph of `fn`, recorded as a training update is
    (`agents.cuda_graph.CapturedCall`, after `warmup` + 1 eager calls on a side stream, which also
    compile any kernels); `fn` takes no arguments and must not synchronise with the host."""
    captured = CapturedCall(fn, warmup_calls=warmup + 1)
    with torch.cuda.device(device):
        while not captured.captured:
            captured({})
        return median_ms(lambda: captured({}), device, warmup, repeats)


class CallClock:
    """Total time inside the calls of one method of one object while `wrapping` it, each call
    measured from its start until the device has finished the work it queued.

    On CUDA an event pair is recorded around each call on the device's current stream and read once, in
    `total_ms`, so timing adds no host synchronisation to the loop it measures (an update's kernels
    may still overlap the next env step, as in a run). On CPU every call is synchronous: wall clock.
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.calls, self._seconds, self._events = 0, 0.0, []

    @contextlib.contextmanager
    def wrapping(self, obj, name):
        original = getattr(obj, name)
        own = name in vars(obj)  # an instance attribute already (a captured or compiled step) stays one

        def timed(*args, **kwargs):
            self.calls += 1
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record(torch.cuda.current_stream(self.device))
                out = original(*args, **kwargs)
                end.record(torch.cuda.current_stream(self.device))
                self._events.append((start, end))
                return out
            began = time.perf_counter()
            out = original(*args, **kwargs)
            self._seconds += time.perf_counter() - began
            return out

        setattr(obj, name, timed)
        try:
            yield self
        finally:
            if own:
                setattr(obj, name, original)
            else:
                delattr(obj, name)

    def total_ms(self):
        for start, end in self._events:
            end.synchronize()
            self._seconds += start.elapsed_time(end) / 1e3
        self._events.clear()
        return 1e3 * self._seconds

    def mean_ms(self):
        """Milliseconds per call, None when there was none."""
        return self.total_ms() / self.calls if self.calls else None
