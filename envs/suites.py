"""The benchmark suites, the DeepMind Control tasks they run, and per-domain settings.

Suites (built by `envs.make_env`): "image" and "noisy_state", and their partially observed
variants "occluded_image" (moving occluders, `envs.occlusions`) and "missing_state" (noisy states
withheld except every 4-8 steps, `envs.missing`).

Task names are `<domain>_<task>` with the short domain names used in the world-model literature:
`cup_catch` is dm_control's (`ball_in_cup`, `catch`). Adding a domain means adding one row to
`ACTION_REPEAT` (and to `DMC_DOMAIN` / `CAMERA_ID` when it differs from the default) and its tasks
to `TASKS`.
"""
import dataclasses

SUITES = ("image", "noisy_state", "missing_state", "occluded_image")

# The default DMC set of the PlaNet / Dreamer / KalMamba line of work.
DEFAULT_TASKS = (
    "cartpole_swingup",
    "cheetah_run",
    "cup_catch",
    "finger_spin",
    "quadruped_walk",
    "reacher_easy",
    "walker_walk",
    "walker_run",
)

EPISODE_ENV_STEPS = 1000  # every dm_control suite task used here: time limit / control timestep

# One agent step repeats its action for this many env steps: PlaNet's values (Hafner et al. 2019,
# also used by VRKN and CoRAL) for cartpole, cheetah, cup, reacher, finger and walker; 2 for
# quadruped and hopper as in VRKN's code.
ACTION_REPEAT = {
    "cartpole": 8,
    "cheetah": 4,
    "cup": 4,
    "reacher": 4,
    "finger": 2,
    "hopper": 2,
    "quadruped": 2,
    "walker": 2,
}

DMC_DOMAIN = {"cup": "ball_in_cup"}  # short name -> dm_control name; others are the same

# Camera 0 everywhere, except quadruped: its camera 0 ("global") views the arena from 17 m away,
# camera 2 ("y") follows the torso from the side at 4 m (Dreamer's convention).
CAMERA_ID = {"quadruped": 2}
DEFAULT_CAMERA_ID = 0

# dm_control 1.0.50 tasks of the domains above (BENCHMARKING set; quadruped's are tagged EXTRA).
TASKS = {
    "cartpole": ("balance", "balance_sparse", "swingup", "swingup_sparse"),
    "cheetah": ("run",),
    "cup": ("catch",),
    "finger": ("spin", "turn_easy", "turn_hard"),
    "hopper": ("stand", "hop"),
    "quadruped": ("walk", "run", "escape", "fetch"),
    "reacher": ("easy", "hard"),
    "walker": ("stand", "walk", "run"),
}

ALL_TASKS = tuple(f"{domain}_{task}" for domain, tasks in TASKS.items() for task in tasks)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything the environment factory needs to know about one task."""

    name: str  # e.g. "cup_catch"
    domain: str  # short domain name, e.g. "cup"
    dmc_domain: str  # dm_control's name, e.g. "ball_in_cup"
    dmc_task: str  # e.g. "catch"
    action_repeat: int  # the domain's default
    camera_id: int


def check_suite(suite: str) -> str:
    """Returns `suite` if it is one of SUITES, else raises ValueError listing them."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; valid suites: {', '.join(SUITES)}")
    return suite


def task_spec(task: str) -> TaskSpec:
    """Parses `<domain>_<task>` into a TaskSpec; an unknown task raises ValueError listing all."""
    for domain, tasks in TASKS.items():
        prefix = domain + "_"
        if isinstance(task, str) and task.startswith(prefix) and task[len(prefix):] in tasks:
            return TaskSpec(
                name=task,
                domain=domain,
                dmc_domain=DMC_DOMAIN.get(domain, domain),
                dmc_task=task[len(prefix):],
                action_repeat=ACTION_REPEAT[domain],
                camera_id=CAMERA_ID.get(domain, DEFAULT_CAMERA_ID),
            )
    raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(ALL_TASKS)}")
