"""A new MACE head as an exact copy of an existing one (readout weights, E0s, scale and shift).

MACE readouts keep mace-torch's layout: a linear readout maps channels to one output per head; the
last, non-linear readout has a hidden block of ``readout_mlp_channels`` per head (masked to the
atom's own head) and a second linear map normalised by √(hidden size) — which grows with the head
count, so its weights are rescaled.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


def readout_names(params: dict) -> list[str]:
    """The readout blocks ``readouts_<i>`` of a parameter tree, in order."""
    return sorted((name for name in params if name.startswith("readouts_")), key=lambda n: int(n.split("_")[1]))


def add_head(config: Any, variables: dict[str, Any], name: str, copy_from: int) -> tuple[Any, dict[str, Any]]:
    """`MACEConfig.with_head`: config and variables (numpy) with head ``name`` copied from ``copy_from``."""
    n, m = len(config.heads), config.readout_mlp_channels
    params = dict(variables["params"])
    for readout in readout_names(params):
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
