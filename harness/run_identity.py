"""What a run is, read from what was built, and the check that a resumed run is the same run.

The identity recorded in run.json (fields in harness.rundir.IDENTITY_FIELDS / CONDITION_DEFAULTS):

    experiment, suite, task, seed, context_length   Experiment's own fields
    method, variant, world_model                    the bound world model's `name` and class
    obs_noise_std, action_noise_std                 the noise of the environment actually built
    dataset_kind                                    offline runs: the kind the dataset records

Resuming compares these field by field, then every binding of the operative gin config except the
ones that only set the budget or how often to log, evaluate and checkpoint (RESUMABLE_BINDINGS):
anything else would mix two configurations in one run directory.
"""
import re

from harness import rundir

# Bindings a resumed run may change: the budget, logging cadence and what is only recorded
# (videos, kept checkpoints, the frame size of videos), nothing that shapes learning.
RESUMABLE_BINDINGS = frozenset({
    "Schedule.total_env_steps", "Schedule.eval_every", "Schedule.checkpoint_every",
    "Schedule.log_every", "Schedule.video_every", "Schedule.keep_checkpoints_at", "make_env.render_size",
    "Offline.gradient_steps", "Offline.eval_every", "Offline.checkpoint_every", "Offline.log_every",
})


def run_identity(experiment, env, dataset_kind=None) -> dict:
    """Identity fields of a run whose environment `env` (and offline dataset) has been built."""
    conditions = getattr(env, "conditions", {})
    return {**experiment.spec(),
            "obs_noise_std": conditions.get("obs_noise_std"),
            "action_noise_std": conditions.get("action_noise_std"),
            "dataset_kind": dataset_kind}


def identity_mismatch(recorded: dict, current: dict):
    """None, or a one-line description of the first identity field that differs."""
    recorded = rundir.identity(recorded)
    for field, value in rundir.identity(current).items():
        old = recorded[field]
        if old is None and field in rundir.CONDITION_DEFAULTS:
            continue  # recorded before the field existed: nothing to compare against
        if old != value:
            return f"{field} is {old!r} in the run but {value!r} now"
    return None


def config_bindings(config_text: str) -> dict:
    """{'Name.param': 'value text'} of an operative config string (gin's format: comments, macros,
    values continued on indented lines)."""
    bindings, key = {}, None
    for line in config_text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and key is not None:
            bindings[key] += " " + line.strip()
            continue
        match = re.match(r"^([\w./]+)\s*=\s*(.*)$", line)
        if match:
            key = match.group(1)
            bindings[key] = match.group(2).strip()
        else:
            key = None  # 'import' and 'include' lines
    return {key: re.sub(r"\s+", " ", value) for key, value in bindings.items()}


def config_mismatch(recorded_text: str, current_text: str, shared_only=False):
    """None, or a one-line description of the first binding (not resumable) that differs.

    shared_only: for checking a parsed (not yet operative) config against the run's operative one
    before anything is built: compare the bindings present in both, and those bound now of a
    configurable the run called that its record lacks (a parameter added since); a parsed config
    also binds configurables this run never calls, which the operative one rightly leaves out.
    """
    old, new = config_bindings(recorded_text), config_bindings(current_text)
    if shared_only:
        called = {key.rsplit(".", 1)[0] for key in old}
        keys = old.keys() & new.keys() | {key for key in new.keys() - old.keys() if key.rsplit(".", 1)[0] in called}
    else:
        keys = old.keys() | new.keys()
    for key in sorted(keys):
        if key in RESUMABLE_BINDINGS or old.get(key) == new.get(key):
            continue
        return f"binding {key} is {old.get(key, '(unset)')} in the run but {new.get(key, '(unset)')} now"
    return None
