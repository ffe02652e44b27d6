"""harness.claims: the verdict of each expectation at the edges of its CI, the shipped claims file,
and the measured difference against a direct rliable call."""
import json

import numpy as np
import pytest
from rliable import library, metrics

from harness import claims
from harness.config import REPO_ROOT

pytestmark = pytest.mark.filterwarnings("ignore:random_state is deprecated:FutureWarning")  # arch, via rliable


@pytest.mark.parametrize("expect, low, high, margin, verdict", [
    ("x_better", 0.01, 0.3, None, "agree"),
    ("x_better", -0.3, -0.01, None, "disagree"),
    ("x_better", -0.01, 0.3, None, "inconclusive"),
    ("x_better", 0.0, 0.3, None, "inconclusive"),       # touching zero is not excluding it
    ("x_worse", -0.3, -0.01, None, "agree"),
    ("x_worse", 0.01, 0.3, None, "disagree"),
    ("x_worse", -0.3, 0.01, None, "inconclusive"),
    ("x_not_worse", -0.04, 0.2, 0.05, "agree"),
    ("x_not_worse", -0.2, -0.06, 0.05, "disagree"),
    ("x_not_worse", -0.2, 0.2, 0.05, "inconclusive"),
    ("similar", -0.09, 0.09, 0.1, "agree"),
    ("similar", 0.11, 0.3, 0.1, "disagree"),
    ("similar", -0.3, -0.11, 0.1, "disagree"),
    ("similar", 0.05, 0.2, 0.1, "inconclusive"),
])
def test_verdicts_at_the_edges(expect, low, high, margin, verdict):
    assert claims.verdict(expect, low, high, margin) == verdict


def test_the_shipped_claims_file_loads_and_names_the_leaderboard_studies():
    loaded = claims.load_claims(REPO_ROOT / "docs" / "paper_claims.json")
    assert {c["experiment"] for c in loaded} == {"noisy100k", "context", "image100k"}
    assert all(c["x"]["method"] in ("kalmamba", "rssm", "vrkn") for c in loaded)


def good_claim():
    return {"id": "c1", "claim": "x", "source": "s", "experiment": "e", "suite": "noisy_state",
            "x": {"method": "a", "context_length": 32}, "y": {"method": "b", "context_length": 32},
            "expect": "x_better"}


@pytest.mark.parametrize("change, words", [
    (lambda c: c.update(expect="better"), "'expect' must be one of"),
    (lambda c: c.update(expect="similar"), "needs a 'margin'"),
    (lambda c: c["x"].update(context_length="32"), "'x' must be"),
    (lambda c: c.update(margin=-1), "'margin' must be a number >= 0"),
])
def test_a_bad_claim_names_itself_and_the_field(tmp_path, change, words):
    claim = good_claim()
    change(claim)
    path = tmp_path / "claims.json"
    path.write_text(json.dumps({"claims": [claim]}))
    with pytest.raises(claims.ClaimsError, match=words) as error:
        claims.load_claims(path)
    assert "(c1)" in str(error.value) and "\n" not in str(error.value)


def test_two_claims_with_one_id_are_refused(tmp_path):
    path = tmp_path / "claims.json"
    path.write_text(json.dumps({"claims": [good_claim(), good_claim()]}))
    with pytest.raises(claims.ClaimsError, match="id 'c1' is used twice"):
        claims.load_claims(path)


def test_the_measurement_is_rliable_on_the_common_tasks():
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 1, (4, 3)), rng.uniform(0, 1, (5, 2))
    result = {"groups": [
        {"experiment": "e", "suite": "s", "context_length": 64, "dataset_kind": None, "methods": ["a"],
         "tasks": ["t1", "t2", "t3"], "scores": {"a": x.tolist()}},
        {"experiment": "e", "suite": "s", "context_length": 32, "dataset_kind": None, "methods": ["b"],
         "tasks": ["t3", "t1"], "scores": {"b": y.tolist()}}]}
    claim = {"id": "c", "experiment": "e", "suite": "s", "x": {"method": "a", "context_length": 64},
             "y": {"method": "b", "context_length": 32}, "expect": "x_better"}
    (got,) = claims.evaluate(result, [claim], reps=100, seed=5)
    measured = got["measured"]
    assert measured["tasks"] == ["t1", "t3"] and (measured["runs_x"], measured["runs_y"]) == (4, 5)
    x_common, y_common = x[:, [0, 2]], y[:, [1, 0]]  # y's columns reordered to t1, t3
    np.random.seed(5)
    points, cis = library.get_interval_estimates(
        {"p": [x_common, y_common]}, lambda a, b: metrics.aggregate_iqm(a) - metrics.aggregate_iqm(b),
        reps=100, random_state=np.random.RandomState(5))
    assert measured["iqm_difference"] == {"point": points["p"], "low": cis["p"][0, 0], "high": cis["p"][1, 0]}
    assert got["verdict"] == claims.verdict("x_better", cis["p"][0, 0], cis["p"][1, 0])
