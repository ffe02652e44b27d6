"""The occluded_image suite: camera frames with moving opaque disks in front of them.

VRKN's occlusion experiments (pbecker93/vrkn envs/wrapper/occlusion_wrapper.py, "disks") paste
pre-rendered videos of moving disks over the frames; those videos are not in the repository, so
this suite draws its disks procedurally, with the same effect: an occluded pixel shows the disk's
colour instead of the scene, and the agent is not told where the disks are.

Scheme, for frames of S x S pixels (S = image_size, 64 in the suite) and `count` disks (default 3):

    at each episode start, per disk i (independently):
        radius   r_i ~ Uniform[0.10 S, 0.20 S]          (6.4 .. 12.8 px at S = 64)
        centre   c_i ~ Uniform[0, S]^2                  (x = column, y = row, in pixels)
        velocity v_i = speed_i (cos phi_i, sin phi_i),  speed_i ~ Uniform[0.02 S, 0.06 S] per agent
                 step (1.3 .. 3.8 px), phi_i ~ Uniform[0, 2 pi)
        colour   RGB, each channel ~ Uniform{0, ..., 255}
    observation t: pixel (row y, column x), centre (x + 0.5, y + 0.5), is covered by disk i when
        |(x + 0.5, y + 0.5) - c_i| <= r_i; it shows the colour of the last disk covering it (disks
        are drawn in order i = 1 .. count), else the rendered frame's pixel.
    between observations: c_i += v_i, reflected at the frame's borders (a coordinate p < 0 becomes
        -p, p > S becomes 2 S - p, and that velocity component changes sign), so disks bounce
        and may cover the frame partly off its edge; constant speed otherwise.

info["true_obs"] is the unoccluded frame (3, S, S) uint8 and info["occluder_mask"] the covered
pixels (S, S) bool, for evaluation only (the agent sees neither). Random numbers: one stream,
spawned (`Generator.spawn`) from the observation stream `reseed` gives, drawn only at episode
starts: 8 uniforms per disk in the order radius, centre x, centre y, speed, angle, 3 colours.
"""
import numpy as np

RADIUS = (0.10, 0.20)  # fractions of the frame side
SPEED = (0.02, 0.06)  # fractions of the frame side per agent step


class OccludedObservation:
    """Wraps a `PixelObservation` (the interface of `envs.observations`) with the disks of the
    module docstring."""

    dtype = np.uint8

    def __init__(self, pixels, count: int = 3):
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"occluders must be an integer >= 0, got {count!r}")
        self._pixels = pixels
        self.shape, self.count = pixels.shape, count
        size = self.shape[1]
        self._size = float(size)
        centres = np.arange(size) + 0.5
        self._y, self._x = centres[:, None], centres[None, :]  # (S, 1), (1, S)
        self._rng = np.random.default_rng(0)
        self._new_disks()

    def reseed(self, rng: np.random.Generator) -> None:
        self._pixels.reseed(rng)
        self._rng = rng.spawn(1)[0]

    def start_episode(self) -> None:
        self._pixels.start_episode()
        self._new_disks()

    def _new_disks(self) -> None:
        S = self._size
        draws = self._rng.uniform(size=(self.count, 8))
        self.radius = S * (RADIUS[0] + (RADIUS[1] - RADIUS[0]) * draws[:, 0])  # (count,)
        self.centre = S * draws[:, 1:3]  # (count, 2) as (x, y)
        speed = S * (SPEED[0] + (SPEED[1] - SPEED[0]) * draws[:, 3])
        angle = 2 * np.pi * draws[:, 4]
        self.velocity = speed[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (count, 2)
        self.colour = np.minimum(np.floor(256 * draws[:, 5:8]), 255).astype(np.uint8)  # (count, 3)

    def occlude(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frame (3, S, S) uint8 -> (occluded frame, covered mask (S, S) bool) at the current centres."""
        occluded, mask = frame.copy(), np.zeros(frame.shape[1:], bool)
        for (cx, cy), r, colour in zip(self.centre, self.radius, self.colour):
            disk = (self._x - cx) ** 2 + (self._y - cy) ** 2 <= r * r
            occluded[:, disk] = colour[:, None]
            mask |= disk
        return occluded, mask

    def _move(self) -> None:
        S = self._size
        centre = self.centre + self.velocity
        low, high = centre < 0, centre > S
        centre = np.where(low, -centre, np.where(high, 2 * S - centre, centre))
        self.velocity = np.where(low | high, -self.velocity, self.velocity)
        self.centre = centre

    def __call__(self, observation) -> tuple[np.ndarray, dict]:
        frame, info = self._pixels(observation)
        occluded, mask = self.occlude(frame)
        self._move()
        return occluded, {**info, "true_obs": frame, "occluder_mask": mask}
