"""Eval-video frames of world models: [rendered frame | reconstruction | open-loop prediction].

For an image-suite run whose world model has an observation model, video frame t is three panels
side by side, each at the rendered frame's height (model images scaled by nearest neighbour):

    render(s_t)  |  reconstruct(belief_t)  |  predict(belief_{t-k}, (a_{t-k}, ..., a_{t-1}))[:, -1]

belief_t is the filtered belief after observing o_t (what the agent acts on at t), and the
prediction shown with frame t was made k = `horizon` steps earlier (default 5 agent steps,
`ModelStrip.horizon` in gin) from the belief then, rolled open loop under the actions the agent
took since, with no observation (models.world_model). Model images go back to uint8 by inverting
the encoders' preprocessing (`models.networks.image_to_uint8`). A panel with nothing to show is
black: the prediction of the first k frames (no belief k steps back) and the reconstruction of the
last frame (the episode ends before the agent observes it).

The state suite gives the frame alone (a decoded state vector is not an image), and so does a model
without an observation model (SAC's `Identity`: `reconstruct` returns None).

Nothing here draws random numbers or changes the agent's state, so an episode's return is the same
with and without video.
"""
import collections

import gin
import numpy as np
import torch

from models.networks import image_to_uint8


def resize_to_height(image: np.ndarray, height: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (height, round(w height / h), 3) by nearest neighbour."""
    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    rows = np.arange(height) * h // height
    cols = np.arange(width) * w // width
    return image[rows[:, None], cols[None, :]]


def _to_rgb(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) preprocessed model image -> (H, W, 3) uint8; one channel is shown grey."""
    pixels = image_to_uint8(image).cpu().numpy().transpose(1, 2, 0)
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels[..., :3]


@gin.configurable
class ModelStrip:
    """Builds the frames of one filmed episode (module docstring).

    Call `frame(rendered, belief, action)` once per agent step with the frame rendered before the
    step, the belief the agent acted on and its action (1, A), and `frame(rendered)` for the final
    frame, after which the agent does not act. Returns the video frame (H, W', 3) uint8.

    Args:
        world_model: the agent's `WorldModel`.
        horizon: k, agent steps between the belief a prediction starts from and the frame it is
            shown with.
    """

    def __init__(self, world_model, horizon: int = 5):
        if int(horizon) < 1:
            raise ValueError(f"ModelStrip.horizon must be >= 1 agent step, got {horizon}")
        self.world_model, self.horizon = world_model, int(horizon)
        self.images = len(world_model.obs_shape) == 3
        self._past = collections.deque(maxlen=self.horizon)  # (belief, action) of the last k steps
        self._panels = None  # True / False once the first belief has been seen

    @torch.no_grad()
    def frame(self, rendered: np.ndarray, belief=None, action=None) -> np.ndarray:
        if not self.images or self._panels is False:
            return rendered
        height = rendered.shape[0]
        reconstruction = prediction = None
        if belief is not None:
            reconstruction = self.world_model.reconstruct(belief)
            if reconstruction is None:
                self._panels = False
                return rendered
            self._panels = True
        if len(self._past) == self.horizon:
            start = self._past[0][0]
            actions = torch.stack([a for _, a in self._past], dim=1)  # (1, k, A)
            prediction = self.world_model.predict(start, actions)[:, -1]
        if belief is not None:
            device = next(iter(belief.values())).device
            self._past.append((belief, torch.as_tensor(np.asarray(action), dtype=torch.float32, device=device)))
        panels = [rendered]
        for image in (reconstruction, prediction):
            panel = np.zeros((height, height, 3), np.uint8)  # model images are square
            if image is not None:
                panel = resize_to_height(_to_rgb(image[0]), height)
            panels.append(panel)
        return np.concatenate(panels, axis=1)


def strip_for(agent):
    """The `ModelStrip` of an agent acting through a world model; frames alone otherwise."""
    world_model = getattr(agent, "world_model", None)
    return ModelStrip(world_model) if world_model is not None else None
