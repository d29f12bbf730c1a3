"""Multi-head fine-tuning: add a readout head as a pure transform of (config, variables).

The new head starts as an exact copy of an existing one (readout weights, E0s, scale and shift),
so before training it predicts what that head predicts.  SevenNet has one readout per head
(``readouts_<h>``): the new one is a copy.  MACE readouts keep mace-torch's layout: a
linear readout maps channels to one output per head; the last, non-linear readout has a hidden
block of ``readout_mlp_channels`` per head (masked to the atom's own head) and a second linear
map normalised by √(hidden size) — which grows with the head count, so its weights are rescaled.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from equitrain_jax.models.config import MACEConfig, SevenNetConfig


def _readout_names(params: dict) -> list[str]:
    return sorted((name for name in params if name.startswith("readouts_")), key=lambda n: int(n.split("_")[1]))


def add_head(config: MACEConfig | SevenNetConfig, variables: dict[str, Any], name: str, copy_from: int = 0) -> tuple[MACEConfig, dict]:
    """A model with one more head, ``name``, copied from head ``copy_from``; the existing heads are
    unchanged.  Returns the new config and variables (numpy arrays)."""
    if not isinstance(config, (MACEConfig, SevenNetConfig)):
        raise ValueError(f"adding a head needs a MACE or SevenNet model; this is a {type(config).__name__}")
    n = len(config.heads)
    if name in config.heads:
        raise ValueError(f"head {name!r} already exists (heads {list(config.heads)})")
    if not 0 <= copy_from < n:
        raise ValueError(f"copy_from={copy_from} is not a head index of {list(config.heads)}")
    params = dict(variables["params"])
    if isinstance(config, SevenNetConfig):
        params[f"readouts_{n}"] = {
            layer: {ir: np.array(w) for ir, w in weights.items()}
            for layer, weights in params[f"readouts_{copy_from}"].items()
        }
        def grown(values: np.ndarray) -> tuple:  # [n_heads + 1][n_elements]: several heads, nested
            return tuple(tuple(float(v) for v in row) for row in np.vstack([values, values[copy_from]]))

        scale, shift = config.head_scale_shift()
        new_config = dataclasses.replace(
            config, heads=tuple(config.heads) + (name,), scale=grown(scale), shift=grown(shift)
        )
        return new_config, {**variables, "params": params}
    m = config.readout_mlp_channels
    for readout in _readout_names(params):
        layers = dict(params[readout])
        if "linear" in layers:  # linear readout: [C, n_heads]
            w = np.asarray(layers["linear"]["0e"])
            layers["linear"] = {"0e": np.concatenate([w, w[:, copy_from : copy_from + 1]], axis=1)}
        else:  # non-linear readout: [C, n*m] then [n*m, n]
            w1, w2 = np.asarray(layers["linear_1"]["0e"]), np.asarray(layers["linear_2"]["0e"])
            block = slice(copy_from * m, (copy_from + 1) * m)
            rescale = math.sqrt((n + 1) / n)
            new_w2 = np.zeros(((n + 1) * m, n + 1), w2.dtype)
            for head in range(n):  # only a head's own block reaches it (the rest is masked)
                own = slice(head * m, (head + 1) * m)
                new_w2[own, head] = w2[own, head] * rescale
            new_w2[n * m :, n] = w2[block, copy_from] * rescale
            layers["linear_1"] = {"0e": np.concatenate([w1, w1[:, block]], axis=1)}
            layers["linear_2"] = {"0e": new_w2}
        params[readout] = layers
    e0 = [tuple(row) for row in config.atomic_energies]
    new_config = dataclasses.replace(
        config,
        heads=tuple(config.heads) + (name,),
        atomic_energies=tuple(e0 + [e0[copy_from]]) if e0 else (),
        scale=tuple(config.scale) + (config.scale[copy_from],),
        shift=tuple(config.shift) + (config.shift[copy_from],),
    )
    return new_config, {**variables, "params": params}


def rename_head(config: MACEConfig | SevenNetConfig, old: str, new: str) -> MACEConfig | SevenNetConfig:
    """``config`` with head ``old`` called ``new``."""
    if old not in config.heads:
        raise ValueError(f"no head {old!r} in {list(config.heads)}")
    if new in config.heads:
        raise ValueError(f"head {new!r} already exists (heads {list(config.heads)})")
    return dataclasses.replace(config, heads=tuple(new if h == old else h for h in config.heads))
