"""The global random generator of rnnx: parameter initialisation and dropout masks.

`manual_seed(seed)` makes both bitwise reproducible. The generator's state can be saved
and restored (`get_rng_state` / `set_rng_state`) as a JSON string, so that checkpoints
hold it without pickle.
"""
import json

import numpy as np

_generator = np.random.Generator(np.random.PCG64())


def manual_seed(seed):
    """Reseed the global generator; returns it."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    _generator = np.random.Generator(np.random.PCG64(int(seed)))
    return _generator


def default_generator():
    """The global numpy Generator that rnnx draws from."""
    return _generator


def get_rng_state():
    """The global generator's state as a JSON string."""
    return json.dumps(_generator.bit_generator.state)


def set_rng_state(state):
    """Restore a state returned by get_rng_state()."""
    if isinstance(state, np.ndarray):
        state = str(state)
    try:
        parsed = json.loads(state)
        _generator.bit_generator.state = parsed
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"not an rnnx RNG state: {exc}") from None
