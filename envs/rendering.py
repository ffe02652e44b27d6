"""Headless OpenGL for MuJoCo: backend choice, clear failures, fast 64x64 render settings.

dm_control picks its OpenGL backend once, when `dm_control._render` is first imported, from the
`MUJOCO_GL` environment variable. Importing this module sets `MUJOCO_GL=egl` unless the user chose
a backend already, so it must be imported before anything imports dm_control (`envs/__init__.py`
imports it first). EGL renders without a display: through the GPU driver where there is one, and
through Mesa's llvmpipe on CPU-only machines.
"""
import os

BACKEND_VARIABLE = "MUJOCO_GL"
DEFAULT_BACKEND = "egl"
DISABLED_VALUES = ("off", "disable", "disabled", "false", "0")  # dm_control's "no renderer" values
EGL_DEBIAN_PACKAGES = ("libegl1", "libegl-mesa0", "libgl1-mesa-dri")


class RenderingUnavailableError(RuntimeError):
    """MuJoCo's OpenGL backend could not be loaded or could not create a rendering context."""


def configure_headless_backend() -> str:
    """Sets MUJOCO_GL to EGL unless it is already set; returns the backend that will be used."""
    return os.environ.setdefault(BACKEND_VARIABLE, DEFAULT_BACKEND)


configure_headless_backend()


def load_triton_before_egl() -> None:
    """Load Triton's compiler library now, if Triton is installed (CUDA builds of torch bring it).

    torch imports Triton lazily, on first use of some of its features; when that happens after
    EGL has loaded Mesa's llvmpipe (CPU-only machines), the two LLVM builds clash and the process
    dies with a segmentation fault inside libtriton. Loaded in the other order, both work.
    """
    try:
        import triton  # noqa: F401
    except Exception:  # not installed, or unusable: torch will not use it either
        pass


load_triton_before_egl()


def rendering_error(error: BaseException) -> RenderingUnavailableError:
    """The one message a user sees when OpenGL fails, naming the packages that fix it."""
    backend = os.environ.get(BACKEND_VARIABLE, "")
    if backend.lower() in DISABLED_VALUES:
        return RenderingUnavailableError(
            f"rendering is switched off by {BACKEND_VARIABLE}={backend!r}, but the image suite "
            f"renders its observations: unset {BACKEND_VARIABLE} to render with EGL.")
    return RenderingUnavailableError(
        f"MuJoCo could not use the OpenGL backend {BACKEND_VARIABLE}={backend!r} "
        f"({type(error).__name__}: {error}). Headless EGL rendering needs the Debian/Ubuntu "
        f"packages: apt-get install {' '.join(EGL_DEBIAN_PACKAGES)}. Alternatively choose another "
        f"backend with {BACKEND_VARIABLE}=osmesa or {BACKEND_VARIABLE}=glfw; runs that never render "
        f"(the noisy_state suite) also work with {BACKEND_VARIABLE}=disable.")


def load_suite():
    """Imports and returns `dm_control.suite`, raising RenderingUnavailableError on a GL failure.

    The backend is loaded while `dm_control._render` is imported; only that import is guarded, so
    unrelated installation problems (a wrong mujoco version, say) keep their own error.
    """
    import mujoco  # noqa: F401  (not an OpenGL problem if this fails)

    try:
        import dm_control._render  # noqa: F401
    except Exception as error:  # the backends fail with ImportError, OSError or OpenGL errors
        raise rendering_error(error) from error
    from dm_control import suite
    return suite


def use_fast_render_settings(physics) -> None:
    """Turns off multisampling and shadows (5x to 9x faster 64x64 frames on llvmpipe).

    Both settings size the offscreen framebuffer, so they take effect only when set before the
    physics creates its rendering context, that is before its first render.
    """
    physics.model.vis.quality.offsamples = 0
    physics.model.vis.quality.shadowsize = 0


def make_camera(physics, height: int, width: int, camera_id: int):
    """A reusable `dm_control.mujoco.Camera`; creates the GL context on first use.

    Reusing one camera saves the scene allocation that `physics.render` repeats on every call
    (0.5 to 2 ms of a 1-5 ms 64x64 frame on llvmpipe, docs/benchmarks.md); the pixels are the same.
    """
    from dm_control.mujoco import engine

    try:
        return engine.Camera(physics, height=height, width=width, camera_id=camera_id)
    except ValueError:
        raise  # bad size or camera id: dm_control's own message is already clear
    except Exception as error:
        raise rendering_error(error) from error
