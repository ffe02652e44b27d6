"""Train metrics between two log lines: device tensors accumulated per update, averaged with one
device-to-host copy for all of them, and refused when any is not finite."""
import math

import torch


class NonFiniteMetricError(RuntimeError):
    """A training loss or statistic became NaN or infinite."""


def mean_on_host(metrics: dict) -> dict:
    """{key: [scalar tensor per update]} -> {'train/<key>': float mean}, one transfer in all."""
    keys = sorted(metrics)
    if not keys:
        return {}
    means = torch.stack([torch.stack([v.float().reshape(()) for v in metrics[k]]).mean() for k in keys]).tolist()
    return {(k if k.startswith("train/") else f"train/{k}"): float(m) for k, m in zip(keys, means)}


def check_finite(record: dict, where: str) -> None:
    """Raise NonFiniteMetricError naming the first non-finite number of a written train line."""
    nonfinite = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
    if nonfinite:
        raise NonFiniteMetricError(f"non-finite train metric {nonfinite[0]} = {record[nonfinite[0]]} "
                                   f"at {where} (all: {', '.join(nonfinite)})")
