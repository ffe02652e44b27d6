"""Belief quality at evaluation: what the filtered beliefs know about the simulator's true state, and
how well the model predicts open loop from them. Off by default; the partially observed suites'
gin files switch it on (`BeliefMetrics.enabled = True`).

During the evaluation's episodes a `BeliefRecorder` receives, at every agent step t, the belief b_t
the agent acted on, its action a_t, and the env's info, and records

    features(b_t)                 (F,)   what the actor sees (`WorldModel.features`)
    log var of b_t's latent       (Z,)   for Gaussian beliefs (`WorldModel.belief_distribution`)
    true state s_t                (D,)   info["true_state"]: the clean dm_control observation
                                         (positions, velocities, ... as the task defines them),
                                         flattened: the noise-free counterpart of a noisy state
    clean observation c_t, a_t           for the open-loop error (harness/open_loop.py)

and, every `open_loop_every` steps from t = open_loop_every on, a copy of b_t to predict from once
the episode's actions are known. Then (harness/belief_probe.py) a ridge probe from features(b_t) and
a heteroscedastic MLP probe from features(b_t) plus the latent's log variance (where the belief has
one and `mlp_reads_variance`) to s_t are fitted on the first half of the episodes and scored on the
rest. The world model's own mean and variance enter only through those probes: the latent has no
units of its own to compare with s_t. SAC's `Identity` is probed the same way on its features, the
observation it acts on.

Eval-line keys (results/README.md): belief/{ridge,mlp}_{r2,r2_dims,nll,coverage_1sigma,
coverage_2sigma}, belief/ridge_alpha, belief/probe_fit_steps, belief/probe_test_steps (with at least
2 eval episodes), and belief/open_loop_mse_k<k> for each horizon k that fits in an episode (models
with an observation model). Cost: one features / variance transfer per eval step, the probes on at
most the eval episodes' steps (the MLP is 2 x 64 units, `mlp_steps` full-batch steps, on the CPU),
and one batched open-loop prediction per episode. Nothing here draws from the global random streams.
"""
import gin
import numpy as np
import torch

from harness import belief_probe, open_loop


@gin.configurable
class BeliefMetrics:
    """The switch and settings of the evaluation's belief metrics (module docstring).

    Args:
        enabled: False (the default: evaluations write returns only).
        horizons: open-loop horizons k in agent steps.
        open_loop_every: agent steps between the starts of open-loop predictions.
        mlp_reads_variance: the MLP probe also reads the belief's log variance.
        mlp_steps: Adam steps of the MLP probe.
        seed: the MLP probe's initialisation.
    """

    def __init__(self, enabled: bool = False, horizons=(1, 5, 10, 25), open_loop_every: int = 25,
                 mlp_reads_variance: bool = True, mlp_steps: int = 300, seed: int = 0):
        horizons = tuple(int(k) for k in horizons)
        if not horizons or min(horizons) < 1 or int(open_loop_every) < 1 or int(mlp_steps) < 0:
            raise ValueError(f"BeliefMetrics needs horizons >= 1, open_loop_every >= 1 and mlp_steps >= 0, "
                             f"got {horizons}, {open_loop_every} and {mlp_steps}")
        self.enabled, self.horizons = bool(enabled), horizons
        self.open_loop_every, self.mlp_reads_variance = int(open_loop_every), bool(mlp_reads_variance)
        self.mlp = belief_probe.MLPSettings(steps=int(mlp_steps), seed=int(seed))

    def recorder(self, agent):
        """A fresh `BeliefRecorder` for one evaluation of `agent` (a LatentSAC), or None when off."""
        if not self.enabled:
            return None
        return BeliefRecorder(agent.world_model, getattr(agent, "obs_normaliser", None), self.horizons,
                              self.open_loop_every)

    def compute(self, recorder) -> dict:
        """The eval line's belief/* entries from a finished recorder ({} for None)."""
        if recorder is None:
            return {}
        out = {}
        fitting_rows = sum(len(f) for f in belief_probe.split_episodes(recorder.features)[0])
        if fitting_rows >= 2 and all(s is not None for s in recorder.true_states):
            mlp_inputs = recorder.features
            if self.mlp_reads_variance and recorder.log_vars:
                mlp_inputs = [np.concatenate(pair, axis=1) for pair in zip(recorder.features, recorder.log_vars)]
            result = belief_probe.probe(recorder.features, recorder.true_states, mlp_inputs, mlp=self.mlp)
            for name in ("ridge", "mlp"):
                for key, value in result[name].items():
                    out[f"belief/{name}_{key}"] = value
            out["belief/probe_fit_steps"], out["belief/probe_test_steps"] = result["fit_steps"], result["test_steps"]
        for k, (total, count) in sorted(recorder.open_loop.items()):
            if count:
                out[f"belief/open_loop_mse_k{k}"] = total / count
        return out


class BeliefRecorder:
    """Collects one evaluation's beliefs (module docstring); `harness.episodes.run_eval_episode`
    calls start_episode(), record(...) once per agent step, and end_episode(...).

    After the evaluation: features, log_vars (empty when the belief is not Gaussian) and true_states
    are lists with one (T_i, .) float64 array per episode; open_loop maps each horizon k to
    (summed squared error, element count) over all episodes.
    """

    def __init__(self, world_model, obs_normaliser, horizons, open_loop_every: int):
        self.world_model, self.obs_normaliser = world_model, obs_normaliser
        self.horizons, self.every, self.K = tuple(horizons), int(open_loop_every), max(horizons)
        self.features, self.log_vars, self.true_states = [], [], []
        self.open_loop = {k: (0.0, 0) for k in self.horizons}
        self._predicts = True  # until the model's predict returns None

    def start_episode(self):
        self._features, self._log_vars, self._states = [], [], []
        self._clean, self._actions, self._starts = [], [], []

    @torch.no_grad()
    def record(self, belief, action, obs, info):
        """belief (1, ...) acted on at step t, action (A,), obs and info of step t."""
        t = len(self._features)
        self._features.append(self.world_model.features(belief)[0].double().cpu().numpy())
        distribution = self.world_model.belief_distribution(belief)
        if distribution is not None:
            self._log_vars.append(torch.log(distribution[1][0]).double().cpu().numpy())
        self._states.append(info.get("true_state"))
        self._clean.append(np.asarray(info.get("true_obs", obs)))
        self._actions.append(np.asarray(action, np.float32))
        if self._predicts and t >= self.every and t % self.every == 0:
            self._starts.append((t, {name: value.clone() for name, value in belief.items()}))

    def end_episode(self, obs, info):
        """obs and info of the final observation (no action follows)."""
        self._clean.append(np.asarray(info.get("true_obs", obs)))
        self.features.append(np.stack(self._features))
        if self._log_vars:
            self.log_vars.append(np.stack(self._log_vars))
        has_states = all(s is not None for s in self._states)
        self.true_states.append(np.stack(self._states).astype(np.float64) if has_states else None)
        self._open_loop()

    def _open_loop(self):
        starts = [(t, belief) for t, belief in self._starts if t + self.K <= len(self._actions)]
        if not starts or not self._predicts:
            return
        device = next(iter(starts[0][1].values())).device
        beliefs = {name: torch.cat([belief[name] for _, belief in starts]) for name in starts[0][1]}
        actions = torch.as_tensor(np.stack([self._actions[t:t + self.K] for t, _ in starts]), device=device)
        clean = torch.as_tensor(np.stack([np.stack(self._clean[t + 1:t + self.K + 1]) for t, _ in starts]),
                                device=device)
        self.world_model.eval()
        with torch.no_grad():
            targets = open_loop.decoder_space(clean, self.obs_normaliser)
        errors = open_loop.open_loop_squared_errors(self.world_model, beliefs, actions, targets, self.horizons)
        if errors is None:
            self._predicts = False
            return
        for k, (total, count) in errors.items():
            previous = self.open_loop[k]
            self.open_loop[k] = (previous[0] + total, previous[1] + count)
