# `make run` and `make test` work on a fresh machine: they create .venv, install, then act.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Small default experiment for `make run` (a few minutes on 2 CPU cores).
RUN_GIN ?= gin/kalmamba_noisy.gin gin/quick.gin
PYTEST_ARGS ?=
# Leaderboard v1 (docs/leaderboard.md): its records, sweep files and the paper's claims.
LEADERBOARD_RESULTS ?= results/leaderboard_v1
LEADERBOARD_SWEEPS  ?= gin/sweeps/leaderboard_noisy100k.gin gin/sweeps/leaderboard_context.gin \
                       gin/sweeps/leaderboard_image100k.gin
LEADERBOARD_REPS    ?= 2000
# While a study is partial (docs/leaderboard.md): if set, a report over every task read at an env step every
# run has reached (report_at_<N>/), and one on a chosen task list alone (report_common_tasks/). Both unset
# now that every noisy100k row has all 5 seeds on every task.
LEADERBOARD_EARLY_STEPS  ?=
LEADERBOARD_COMMON_TASKS ?=

.PHONY: setup run test test-slow bench clean leaderboard

setup: $(STAMP)

# torch is pinned and installed first: an unpinned torch resolves to a multi-GB CUDA build.
$(STAMP): setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Its own experiment name, so that the --overwrite that makes it repeatable never replaces a full run.
run: $(STAMP)
	$(PY) -m harness.run $(addprefix --gin ,$(RUN_GIN)) --bind "Experiment.name = 'make_run'" --overwrite

test: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# Regenerates docs/leaderboard.md's tables and the HTML report ($(LEADERBOARD_RESULTS)/report/index.html),
# the report at env step $(LEADERBOARD_EARLY_STEPS) and the one on $(LEADERBOARD_COMMON_TASKS) alone
# from the committed records; the same records give the same bytes (tests/harness/test_committed_leaderboard.py
# regenerates it the same way and fails when the committed tables are not what the records give).
LEADERBOARD_REPORT = $(PY) -m harness.report $(LEADERBOARD_RESULTS) --reps $(LEADERBOARD_REPS) --claims docs/paper_claims.json
leaderboard: $(STAMP)
	@test -d $(LEADERBOARD_RESULTS) || { echo "error: LEADERBOARD_RESULTS=$(LEADERBOARD_RESULTS) is not a directory; docs/leaderboard.md left as it is" >&2; exit 2; }
	$(LEADERBOARD_REPORT) --allow-empty $(addprefix --sweep ,$(LEADERBOARD_SWEEPS)) --into docs/leaderboard.md
	$(if $(LEADERBOARD_EARLY_STEPS),$(LEADERBOARD_REPORT) --at-env-steps $(LEADERBOARD_EARLY_STEPS) \
	  --out $(LEADERBOARD_RESULTS)/report_at_$(LEADERBOARD_EARLY_STEPS))
	$(if $(LEADERBOARD_COMMON_TASKS),$(LEADERBOARD_REPORT) --tasks $(LEADERBOARD_COMMON_TASKS) \
	  --out $(LEADERBOARD_RESULTS)/report_common_tasks)

clean:
	rm -rf $(VENV) .pytest_cache
