"""Every random stream a run draws from, captured into and restored from its checkpoint, so that a
resumed run continues the streams of the interrupted one: the run's numpy Generator (replay
sampling, prefill actions), Python's `random`, torch's CPU generator and, where present, CUDA's."""
import random

import torch


def capture(rng=None) -> dict:
    """The state of `rng` (a numpy Generator; None for a run without one) and of the global generators."""
    return {"numpy": None if rng is None else rng.bit_generator.state, "python": random.getstate(),
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore(rng, state: dict) -> None:
    """Undo `capture`: set `rng` (unless None) and the global generators to `state`."""
    if rng is not None:
        rng.bit_generator.state = state["numpy"]
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
