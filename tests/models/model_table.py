"""Every world model the cross-model tests run over: adding a baseline is one line in `MODELS`.

Each entry builds a small instance for a state shape (5,) or (3, 64, 64) uint8 images, with the
suite's shared networks shrunk (`small_networks`) where the model takes them.
"""
import functools
from typing import Callable, NamedTuple

from models import networks
from models.identity import Identity
from models.kalmamba import KalMamba
from models.rssm import RSSM
from models.vrkn import VRKN

SHAPES = {"state": (5,), "image": (3, 64, 64)}


class ModelEntry(NamedTuple):
    """factory(obs_shape, action_dim, **kwargs) -> WorldModel; `small`: keyword arguments of a small
    instance; `uses_networks`: takes encoder_fn / decoder_fn; `images`: accepts image observations;
    `learned`: has parameters and a loss."""

    factory: Callable
    small: dict
    uses_networks: bool = True
    images: bool = True
    learned: bool = True


MODELS = {
    "identity": ModelEntry(Identity, {}, uses_networks=False, images=False, learned=False),
    # the carried z is the posterior mean in eval mode, so observe == steps exactly (the sampling
    # default, `sample_when_acting`, is covered in tests/models/test_rssm.py)
    "rssm": ModelEntry(RSSM, dict(deter_dim=12, stoch_dim=4, hidden_dim=16, sample_when_acting=False)),
    # latent != hidden width, so KalMamba's projection is exercised
    "kalmamba": ModelEntry(KalMamba, dict(latent_dim=6, hidden_dim=10, d_state=4)),
    "vrkn": ModelEntry(VRKN, dict(latent_dim=6, hidden_dim=10)),
}


def small_networks(shape_name):
    """(encoder_fn, decoder_fn) of the suite's kind, a few units wide."""
    if shape_name == "image":
        return (functools.partial(networks.ImageEncoder, depth=4), functools.partial(networks.ImageDecoder, depth=4))
    return (functools.partial(networks.StateEncoder, hidden_dim=16, num_layers=2),
            functools.partial(networks.StateDecoder, hidden_dim=16, num_layers=2))


def build(name, shape_name, action_dim, **overrides):
    """A small instance of MODELS[name] for SHAPES[shape_name]."""
    entry = MODELS[name]
    kwargs = dict(entry.small)
    if entry.uses_networks:
        kwargs["encoder_fn"], kwargs["decoder_fn"] = small_networks(shape_name)
    kwargs.update(overrides)
    return entry.factory(SHAPES[shape_name], action_dim, **kwargs)


def cases(learned_only=False):
    """(name, shape_name) pairs every contract test runs over."""
    return [(name, shape) for name, entry in MODELS.items() for shape in SHAPES
            if (entry.images or shape != "image") and (entry.learned or not learned_only)]
