"""Adding a head: the new head predicts exactly what the head it copies predicts, and the existing
heads are unchanged — for single-head (linear → masked readout) and two-head models."""

from __future__ import annotations

import numpy as np
import pytest
from common import converted_bundle, structures

from equitrain_jax.adapters.heads import add_head, rename_head
from equitrain_jax.models.io import ModelBundle
from equitrain_jax.potential import Potential


@pytest.mark.parametrize("architecture, heads, copy_from", [
    ("mp0a-medium", ("Default",), 0),
    pytest.param("mp0b3", ("a", "b"), 1, marks=pytest.mark.slow),  # 30 s; added heads of multi-head models: also convert/test_export (parity with mace-torch)
])
def test_new_head_copies_an_existing_one(architecture, heads, copy_from):
    bundle = converted_bundle(architecture, (1, 6, 8, 14), seed=2, heads=heads)
    cases = list(structures().values())
    before = {h: Potential(bundle, head=h).evaluate(cases) for h in range(len(heads))}
    config, variables = add_head(bundle.config, bundle.variables, "new", copy_from)
    assert config.heads == (*heads, "new")
    extended = ModelBundle(config, variables)
    for h, reference in [*before.items(), (len(heads), before[copy_from])]:
        for out, ref in zip(Potential(extended, head=h).evaluate(cases), reference):
            np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-13)
            np.testing.assert_allclose(out["forces"], ref["forces"], atol=1e-11)
            np.testing.assert_allclose(out["stress"], ref["stress"], atol=1e-12)


def test_head_name_errors():
    bundle = converted_bundle("mp0a-small", (1, 8), seed=0)
    with pytest.raises(ValueError, match="already exists"):
        add_head(bundle.config, bundle.variables, "Default")
    with pytest.raises(ValueError, match="copy_from=3"):
        add_head(bundle.config, bundle.variables, "x", copy_from=3)
    with pytest.raises(ValueError, match="no head 'nope'"):
        rename_head(bundle.config, "nope", "x")
