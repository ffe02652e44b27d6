"""A paper's claims set against what was measured: `evaluate(result, load_claims(path), ...)`.

A claims file (JSON; docs/paper_claims.json) holds {"source": ..., "claims": [claim, ...]}; each
claim compares two leaderboard rows of one experiment and suite, each row at its context length:

    {"id": "noisy-kalmamba-above-rssm", "claim": "KalMamba scores clearly above RSSM ...",
     "source": "where the paper says it", "experiment": "noisy100k", "suite": "noisy_state",
     "x": {"method": "kalmamba", "context_length": 32}, "y": {"method": "rssm", "context_length": 32},
     "expect": "x_better", "margin": 0.1}

Measured, on the final normalised scores (return / 1000) of the tasks both rows ran: the IQM
difference d = IQM(x) - IQM(y) and the probability of improvement P(X > Y), each with a percentile
stratified-bootstrap CI (rliable; the runs of x and of y resampled independently within each task;
the aggregate's seed, so the verdicts are the same for the same records). With d's CI [lo, hi] and
m = `margin` (normalised score; required by 'similar' and 'x_not_worse', where the paper gives no
number and the file states ours):

    expect        agree                 disagree              otherwise
    x_better      lo > 0                hi < 0                inconclusive (the CI straddles 0)
    x_worse       hi < 0                lo > 0                inconclusive
    x_not_worse   lo > -m               hi < -m               inconclusive (the CI straddles -m)
    similar       -m < lo and hi < m    lo > m or hi < -m     inconclusive

and 'not yet measured' while either row has no finished run in the aggregate (or they share no task).
"""
import json
import pathlib

import numpy as np

from harness import aggregate as aggregate_lib
from harness import score_metrics

EXPECTATIONS = ("x_better", "x_worse", "x_not_worse", "similar")
AGREE, DISAGREE, INCONCLUSIVE, NOT_MEASURED = "agree", "disagree", "inconclusive", "not yet measured"
_TEXT_FIELDS = ("id", "claim", "source", "experiment", "suite")


class ClaimsError(ValueError):
    """The claims file cannot be used; the message is one line naming the claim and the field."""


def load_claims(path) -> list[dict]:
    """The checked claims of a claims file, in its order."""
    path = pathlib.Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise ClaimsError(f"cannot read the claims file {path}: {error.strerror or error}") from error
    except ValueError as error:
        raise ClaimsError(f"claims file {path} is not valid JSON ({str(error).splitlines()[0]})") from error
    claims = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(claims, list):
        raise ClaimsError(f"claims file {path}: expected an object with a list 'claims'")
    ids = set()
    for i, claim in enumerate(claims):
        where = f"claims file {path}, claim {i}"
        if not isinstance(claim, dict):
            raise ClaimsError(f"{where}: not an object")
        for field in _TEXT_FIELDS:
            if not isinstance(claim.get(field), str) or not claim[field]:
                raise ClaimsError(f"{where}: '{field}' must be a non-empty string")
        if claim["id"] in ids:
            raise ClaimsError(f"{where}: id {claim['id']!r} is used twice")
        ids.add(claim["id"])
        for side in ("x", "y"):
            value = claim.get(side)
            length = value.get("context_length") if isinstance(value, dict) else None
            if not isinstance(value, dict) or not isinstance(value.get("method"), str) \
                    or not isinstance(length, int) or isinstance(length, bool):
                raise ClaimsError(f"{where} ({claim['id']}): '{side}' must be {{'method': str, 'context_length': int}}")
        if claim.get("expect") not in EXPECTATIONS:
            raise ClaimsError(f"{where} ({claim['id']}): 'expect' must be one of {', '.join(EXPECTATIONS)}")
        margin = claim.get("margin")
        if claim["expect"] in ("similar", "x_not_worse") and margin is None:
            raise ClaimsError(f"{where} ({claim['id']}): expect {claim['expect']!r} needs a 'margin'")
        if margin is not None and (not isinstance(margin, (int, float)) or isinstance(margin, bool) or margin < 0):
            raise ClaimsError(f"{where} ({claim['id']}): 'margin' must be a number >= 0")
    return claims


def verdict(expect, low, high, margin=0.0):
    """agree / disagree / inconclusive for a difference whose CI is [low, high] (module docstring)."""
    m = float(margin or 0.0)
    agree, disagree = {
        "x_better": (low > 0, high < 0),
        "x_worse": (high < 0, low > 0),
        "x_not_worse": (low > -m, high < -m),
        "similar": (-m < low and high < m, low > m or high < -m),
    }[expect]
    return AGREE if agree else DISAGREE if disagree else INCONCLUSIVE


def evaluate(result, claims, reps, seed, confidence=0.95) -> list[dict]:
    """Each claim with 'measured' (None or {tasks, runs_x, runs_y, iqm_difference, probability_of_improvement})
    and 'verdict'."""
    evaluated = []
    for claim in claims:
        scores = _scores(result, claim)
        measured = None if scores is None else _measure(*scores, reps, seed, confidence)
        evaluated.append({**claim, "measured": measured,
                          "verdict": NOT_MEASURED if measured is None else
                          verdict(claim["expect"], measured["iqm_difference"]["low"],
                                  measured["iqm_difference"]["high"], claim.get("margin"))})
    return evaluated


def _group(result, claim, side):
    for g in result["groups"]:
        if (g["experiment"], g["suite"], g["context_length"], g.get("dataset_kind")) == \
                (claim["experiment"], claim["suite"], claim[side]["context_length"], claim.get("dataset_kind")) \
                and claim[side]["method"] in g["methods"]:
            return g
    return None


def _scores(result, claim):
    """(tasks, x scores (runs, tasks), y scores) on the tasks both rows ran, None if not measured."""
    gx, gy = _group(result, claim, "x"), _group(result, claim, "y")
    if gx is None or gy is None:
        return None
    tasks = [t for t in gx["tasks"] if t in gy["tasks"]]
    if not tasks:
        return None
    x = np.asarray(gx["scores"][claim["x"]["method"]], dtype=np.float64)[:, [gx["tasks"].index(t) for t in tasks]]
    y = np.asarray(gy["scores"][claim["y"]["method"]], dtype=np.float64)[:, [gy["tasks"].index(t) for t in tasks]]
    return tasks, x, y


def _measure(tasks, x, y, reps, seed, confidence):
    functions = {"iqm_difference": lambda a, b: score_metrics.iqm(a) - score_metrics.iqm(b),
                 "probability_of_improvement": score_metrics.probability_of_improvement}
    measured = {"tasks": tasks, "runs_x": int(x.shape[0]), "runs_y": int(y.shape[0])}
    for name, function in functions.items():
        points, cis = aggregate_lib.interval_estimates({"pair": [x, y]}, function, reps, seed, confidence)
        measured[name] = aggregate_lib.estimate(points["pair"], cis["pair"])
    return measured
