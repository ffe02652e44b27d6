"""Eval-video frames (harness.video_strip): [frame | reconstruction | open-loop prediction] for an
image-suite world model, the frame alone for SAC (Identity) and for the state suite; filming
changes no return."""
import functools

import numpy as np
import pytest
import torch

from agents.latent_sac import LatentSAC
from agents.sac import SAC
from harness import episodes, video_strip
from models.networks import image_to_uint8
from tests.models import model_table

ACTION_DIM, STEPS, SIZE = 2, 9, 48


class FakeEnv:
    """A deterministic env of `STEPS` agent steps whose frames (SIZE, SIZE, 3) encode the step."""

    def __init__(self, obs_shape):
        self.obs_shape, self.action_dim, self.t = obs_shape, ACTION_DIM, 0

    def _obs(self):
        if len(self.obs_shape) == 3:
            return np.full(self.obs_shape, 20 * self.t, np.uint8)
        return np.full(self.obs_shape, 0.1 * self.t, np.float32)

    def reset(self, seed=None):
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(np.sum(action)), False, self.t == STEPS, {}

    def render(self):
        return np.full((SIZE, SIZE, 3), 10 + 20 * self.t, np.uint8)


def make_agent(name, shape_name, **overrides):
    torch.manual_seed(0)
    model = model_table.build(name, shape_name, ACTION_DIM, **overrides)
    return LatentSAC(model, ACTION_DIM, sac=functools.partial(SAC, hidden_dim=16))


def film(agent, shape_name):
    frames = []
    total = episodes.run_eval_episode(agent, FakeEnv(model_table.SHAPES[shape_name]), seed=0, frames=frames)
    return total, frames


@pytest.mark.parametrize("name", ["kalmamba", "vrkn", "rssm"])
def test_image_world_model_frames_are_three_panels_side_by_side(name):
    agent = make_agent(name, "image")
    _, frames = film(agent, "image")
    assert len(frames) == STEPS + 1
    assert all(f.shape == (SIZE, 3 * SIZE, 3) and f.dtype == np.uint8 for f in frames)
    for t, frame in enumerate(frames):
        assert np.all(frame[:, :SIZE] == 10 + 20 * t), "the left panel is the rendered frame"
    horizon = video_strip.ModelStrip(agent.world_model).horizon
    assert horizon == 5
    predictions = [f[:, 2 * SIZE:] for f in frames]
    assert not any(p.any() for p in predictions[:horizon]), "no belief k steps back: black"
    assert all(p.any() for p in predictions[horizon:])
    assert not frames[-1][:, SIZE:2 * SIZE].any(), "the last frame is never observed: no reconstruction"

    # the middle panel is the reconstruction of the belief acted on at that step, scaled to the height
    env, state = FakeEnv(model_table.SHAPES["image"]), agent.initial_state(1)
    obs, _ = env.reset()
    _, state = agent.act(state, obs[None], np.zeros((1, ACTION_DIM), np.float32), [True], deterministic=True)
    with torch.no_grad():
        image = image_to_uint8(agent.world_model.reconstruct(state)[0]).numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(frames[0][:, SIZE:2 * SIZE], video_strip.resize_to_height(image, SIZE))


@pytest.mark.parametrize("name,shape_name", [("identity", "state"), ("kalmamba", "state"), ("rssm", "state")])
def test_sac_and_the_state_suite_film_the_frame_alone(name, shape_name):
    _, frames = film(make_agent(name, shape_name), shape_name)
    assert len(frames) == STEPS + 1
    for t, frame in enumerate(frames):
        np.testing.assert_array_equal(frame, np.full((SIZE, SIZE, 3), 10 + 20 * t, np.uint8))


@pytest.mark.parametrize("name", ["rssm", "kalmamba"])
def test_filming_changes_no_return_and_no_random_stream(name):
    """RSSM samples its latent when acting (sample_when_acting): the strip must draw nothing."""
    overrides = {"sample_when_acting": True} if name == "rssm" else {}
    results = []
    for filmed in (False, True):
        agent = make_agent(name, "image", **overrides)
        frames = [] if filmed else None
        total = episodes.run_eval_episode(agent, FakeEnv(model_table.SHAPES["image"]), 0, frames)
        results.append((total, torch.rand(3)))
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1])


def test_resize_to_height_is_nearest_neighbour():
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    assert video_strip.resize_to_height(image, 8).shape == (8, 12, 3)
    np.testing.assert_array_equal(video_strip.resize_to_height(image, 8)[::2, ::2], image)
    np.testing.assert_array_equal(video_strip.resize_to_height(image, 4), image)
