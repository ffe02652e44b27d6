"""Open-loop prediction error and the evaluation's belief metrics, on a linear system whose exact
model is known: x_{t+1} = A x_t + B a_t, observed without noise. A world model with the true (A, B)
predicts the truth (zero error at every horizon); one with a perturbed A drifts, and its error grows
with the horizon. The same episodes run through `harness.episodes.run_eval_episode` with a
`BeliefRecorder`, as the runner's evaluation does."""
import numpy as np
import pytest
import torch

from harness import episodes, open_loop
from harness.belief_metrics import BeliefMetrics
from models.world_model import WorldModel

D, A_DIM, STEPS = 3, 2, 120


def true_dynamics():
    angle = 0.3
    A = np.zeros((D, D))
    A[:2, :2] = 0.97 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    A[2, 2] = 0.9
    B = np.random.default_rng(0).uniform(-0.5, 0.5, (D, A_DIM))
    return A, B


class LinearModel(WorldModel):
    """Belief = the last observation x_t; predict rolls x <- A x + B a and decodes x itself."""

    name = "linear"

    def __init__(self, A, B):
        super().__init__()
        self.obs_shape, self.action_dim, self.feature_dim = (D,), A_DIM, D
        self.register_buffer("A", torch.as_tensor(A))
        self.register_buffer("B", torch.as_tensor(B))

    def initial_state(self, batch_size):
        return {"x": torch.zeros(batch_size, D, dtype=torch.float64)}

    def observe(self, obs, prev_action, is_first, state=None, obs_valid=None):
        raise NotImplementedError

    def step(self, obs, prev_action, is_first, state, obs_valid=None):
        return {"x": obs.double()}

    def features(self, belief):
        return belief["x"]

    def loss(self, batch):
        raise NotImplementedError

    def predict(self, state, actions):
        x, out = state["x"], []
        for k in range(actions.shape[1]):
            x = x @ self.A.T + actions[:, k].double() @ self.B.T
            out.append(x)
        return torch.stack(out, 1)


class NoObservationModel(LinearModel):
    def predict(self, state, actions):
        return None


class LinearEnv:
    """The true system, x_0 ~ N(0, I); info carries the true state like the DMC suites."""

    action_dim = A_DIM

    def __init__(self):
        self.A, self.B = true_dynamics()

    def reset(self, seed):
        self.rng, self.t = np.random.default_rng(seed), 0
        self.x = self.rng.standard_normal(D)
        return self.x.copy(), {"true_state": self.x.copy()}

    def step(self, action):
        self.x, self.t = self.A @ self.x + self.B @ action, self.t + 1
        return self.x.copy(), 0.0, False, self.t >= STEPS, {"true_state": self.x.copy()}


class RandomAgent:
    """Seeded uniform actions; the belief comes from the world model's step."""

    def __init__(self, world_model, seed=0):
        self.world_model, self.rng = world_model, np.random.default_rng(seed)

    def initial_state(self, batch_size):
        return self.world_model.initial_state(batch_size)

    def act(self, state, obs, prev_action, is_first, deterministic=False, **kwargs):
        state = self.world_model.step(torch.as_tensor(obs), None, None, state)
        return self.rng.uniform(-1, 1, (1, A_DIM)).astype(np.float32), state


def evaluate(model, metrics, count=4):
    agent, env = RandomAgent(model), LinearEnv()
    recorder = metrics.recorder(agent)
    for i in range(count):
        episodes.run_eval_episode(agent, env, seed=i, recorder=recorder)
    return metrics.compute(recorder)


def test_open_loop_error_is_zero_for_the_exact_model_and_grows_with_k_for_a_wrong_one():
    A, B = true_dynamics()
    metrics = BeliefMetrics(enabled=True, horizons=(1, 5, 10, 25), open_loop_every=25, mlp_steps=20)
    exact = evaluate(LinearModel(A, B), metrics)
    wrong_A = A + 0.1 * np.random.default_rng(1).standard_normal((D, D))
    wrong = evaluate(LinearModel(wrong_A, B), metrics)
    keys = [f"belief/open_loop_mse_k{k}" for k in (1, 5, 10, 25)]
    assert all(exact[key] < 1e-20 for key in keys)
    errors = [wrong[key] for key in keys]
    assert errors[0] > 1e-4 and all(a < b for a, b in zip(errors, errors[1:])), errors


def test_open_loop_squared_errors_counts_every_start_and_horizon():
    A, B = true_dynamics()
    model = LinearModel(A, B)
    starts = {"x": torch.randn(70, D, dtype=torch.float64)}
    actions = torch.rand(70, 6, A_DIM, dtype=torch.float64)
    truth = model.predict(starts, actions)
    errors = open_loop.open_loop_squared_errors(model, starts, actions, truth + 1.0, horizons=(1, 6, 7), chunk=32)
    assert errors == {1: (70.0 * D, 70 * D), 6: (70.0 * D, 70 * D)}  # k = 7 exceeds the 6 actions
    assert open_loop.open_loop_squared_errors(NoObservationModel(A, B), starts, actions, truth, (1,)) is None


def test_belief_metrics_keys_and_probe_of_a_perfect_belief():
    A, B = true_dynamics()
    result = evaluate(LinearModel(A, B), BeliefMetrics(enabled=True, mlp_steps=50))
    for probe in ("ridge", "mlp"):
        for key in ("r2", "r2_dims", "nll", "coverage_1sigma", "coverage_2sigma"):
            assert f"belief/{probe}_{key}" in result
    assert result["belief/ridge_r2"] > 0.999  # the belief is the true state
    assert len(result["belief/ridge_r2_dims"]) == D
    assert (result["belief/probe_fit_steps"], result["belief/probe_test_steps"]) == (2 * STEPS, 2 * STEPS)
    assert {k for k in result if "open_loop" in k} == {f"belief/open_loop_mse_k{k}" for k in (1, 5, 10, 25)}
    blind = evaluate(NoObservationModel(A, B), BeliefMetrics(enabled=True, mlp_steps=5))
    assert "belief/ridge_r2" in blind and not any("open_loop" in k for k in blind)
    one_episode = evaluate(LinearModel(A, B), BeliefMetrics(enabled=True, mlp_steps=5), count=1)
    assert "belief/ridge_r2" not in one_episode and "belief/open_loop_mse_k1" in one_episode


def test_belief_metrics_are_off_by_default_and_on_in_the_partially_observed_suites():
    from harness import config
    import gin
    try:
        assert BeliefMetrics().recorder(object()) is None and BeliefMetrics().compute(None) == {}
        for path, enabled in [("gin/kalmamba_noisy.gin", False), ("gin/sac_noisy.gin", False),
                              ("gin/kalmamba_missing_state.gin", True), ("gin/rssm_occluded_image.gin", True)]:
            config.parse([path, "gin/quick.gin"])
            assert BeliefMetrics().enabled is enabled, path
    finally:
        gin.clear_config()
    with pytest.raises(ValueError, match="horizons"):
        BeliefMetrics(horizons=(0, 5))
