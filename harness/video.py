"""Episode videos: a list of (H, W, 3) uint8 frames -> one H.264 mp4, written atomically.

Encoded by imageio-ffmpeg, whose wheel ships an ffmpeg binary: nothing to install system-wide.
The run directory decides where videos go (harness.rundir); this module only encodes.
"""
import importlib.util
import os
import pathlib

import numpy as np


class VideoUnavailableError(RuntimeError):
    """imageio-ffmpeg is missing; the message names the package."""


def check_available():
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        raise VideoUnavailableError("videos need the imageio-ffmpeg package: pip install imageio-ffmpeg")


def write_mp4(path, frames, fps: float) -> pathlib.Path:
    """Encode `frames` (each (H, W, 3) uint8, all one size) at `fps` frames per second into `path`.

    The file appears whole or not at all: ffmpeg writes `<path>.tmp`, which replaces `path`.
    """
    check_available()
    import imageio_ffmpeg
    if not frames:
        raise ValueError("a video needs at least one frame")
    height, width, channels = np.shape(frames[0])
    if channels != 3:
        raise ValueError(f"frames must be (H, W, 3) RGB, got {np.shape(frames[0])}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (width, height), fps=fps, codec="libx264", quality=7, macro_block_size=2,
            output_params=["-f", "mp4"], ffmpeg_log_level="error")
        writer.send(None)  # starts ffmpeg
        for frame in frames:
            writer.send(np.ascontiguousarray(frame, dtype=np.uint8))
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_mp4(path) -> tuple[dict, list]:
    """(ffmpeg's metadata: fps, size, ...; the decoded (H, W, 3) uint8 frames) of a video."""
    import imageio_ffmpeg
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(raw, np.uint8).reshape(height, width, 3) for raw in reader]
    return meta, frames
