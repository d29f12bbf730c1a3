"""SevenNet checkpoint conversion: the CLI on a file and on --pretrained, every tensor accounted
for, unsupported options and foreign pickles refused, and a clear error without sevenn installed.

Numbers against sevenn are in ``tests/models/test_sevennet.py``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from equitrain_jax import cli
from equitrain_jax.convert import sevennet
from equitrain_jax.convert.mace_torch import ConversionError
from equitrain_jax.models.sevennet import SevenNetConfig
from equitrain_jax.models.io import load_model
from equitrain_jax.models.sevennet import SevenNet


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    """SevenNet-0 inside the installed sevenn package (found without importing sevenn)."""
    if importlib.util.find_spec("sevenn") is None:
        pytest.skip(f"SevenNet-0 ships in sevenn: {sevennet.SEVENN_INSTALL}")
    return sevennet.pretrained_checkpoint("sevennet-0")


@pytest.fixture(scope="module")
def contents(checkpoint) -> dict:
    return sevennet.read_checkpoint(checkpoint)


def edited(tmp_path: Path, contents: dict, config=None, state=None) -> Path:
    """A copy of the checkpoint with config entries and state-dict tensors replaced or added."""
    path = tmp_path / "edited.pth"
    torch.save(
        {
            "config": {**contents["config"], **(config or {})},
            "model_state_dict": {**contents["model_state_dict"], **(state or {})},
        },
        path,
    )
    return path


def test_cli_converts_a_checkpoint_file(checkpoint, tmp_path, capsys):
    """The directory loads as a SevenNet model with exactly the converted arrays (the numbers
    against sevenn are tested in tests/models/test_sevennet.py)."""
    cli.main(["convert", str(checkpoint), "-o", str(tmp_path / "model")])
    assert "SevenNet" in capsys.readouterr().out
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["format"] == "equitrain-jax/sevennet"
    bundle = load_model(tmp_path / "model")
    assert isinstance(bundle.config, SevenNetConfig)
    assert isinstance(bundle.module(), SevenNet)
    assert bundle.config.num_interactions == 5 and bundle.config.num_elements == 89
    config, variables = sevennet.convert_checkpoint(checkpoint)
    assert bundle.config == config
    names, arrays = _flatten(variables)
    assert _flatten(bundle.variables)[0] == names and len(names) > 20
    assert all(np.array_equal(a, b) for a, b in zip(_flatten(bundle.variables)[1], arrays))


def test_cli_pretrained_matches_the_file(checkpoint, tmp_path):
    cli.main(["convert", "--pretrained", "sevennet-0", "-o", str(tmp_path / "pretrained")])
    cli.main(["convert", str(checkpoint), "-o", str(tmp_path / "file")])
    a, b = load_model(tmp_path / "pretrained"), load_model(tmp_path / "file")
    assert a.config == b.config
    flat_a, flat_b = (dict(zip(*_flatten(x.variables))) for x in (a, b))
    assert flat_a.keys() == flat_b.keys()
    assert all(np.array_equal(flat_a[k], flat_b[k]) for k in flat_a)


def _flatten(tree):
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [jax.tree_util.keystr(p) for p, _ in leaves], [np.asarray(v) for _, v in leaves]


def test_pretrained_without_sevenn_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(sevennet.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps sevenn==0.13.0"):
        sevennet.pretrained_checkpoint("sevennet-0")
    with pytest.raises(SystemExit, match="pip install --no-deps sevenn==0.13.0"):
        cli.main(["convert", "--pretrained", "sevennet-0", "-o", str(tmp_path / "model")])


def test_unknown_pretrained_name():
    with pytest.raises(ValueError, match="unknown pretrained SevenNet model 'sevennet-42'"):
        sevennet.pretrained_checkpoint("sevennet-42")


def test_unmapped_tensor_is_named(contents, tmp_path):
    path = edited(tmp_path, contents, state={"5_convolution.extra_weight": torch.ones(3)})
    with pytest.raises(ConversionError, match="5_convolution.extra_weight"):
        sevennet.convert_checkpoint(path)


def test_missing_tensor_is_named(contents, tmp_path):
    state = dict(contents["model_state_dict"])
    del state["2_self_interaction_1.linear.weight"]
    path = tmp_path / "missing.pth"
    torch.save({"config": contents["config"], "model_state_dict": state}, path)
    with pytest.raises(ConversionError, match="2_self_interaction_1.linear.weight"):
        sevennet.convert_checkpoint(path)


def test_non_empty_bias_is_not_ignored(contents, tmp_path):
    path = edited(tmp_path, contents, state={"0_self_interaction_1.linear.bias": torch.ones(128)})
    with pytest.raises(ConversionError, match="0_self_interaction_1.linear.bias"):
        sevennet.convert_checkpoint(path)


@pytest.mark.parametrize(
    "option, value",
    [("is_parity", True), ("self_connection_type", "nequip"), ("cutoff_function", {"cutoff_function_name": "poly_cut"})],
)
def test_unsupported_option_is_named(contents, tmp_path, option, value):
    path = edited(tmp_path, contents, config={option: value})
    with pytest.raises(ConversionError, match=option):
        sevennet.convert_checkpoint(path)


class Foreign:
    """Stands for a pickled class of another package (e.g. sevenn's own)."""


def test_foreign_pickled_objects_are_refused(contents, tmp_path):
    path = edited(tmp_path, contents, config={"something": Foreign()})
    with pytest.raises(ConversionError, match="Foreign"):
        sevennet.read_checkpoint(path)
    assert not sevennet.is_sevennet_checkpoint(path)


def test_weight_order_by_version():
    """sevenn sorted the edge weights by output irrep from 0.11.0 (not in its 0.11.0.dev0)."""
    assert sevennet.instruction_order_weights("0.9.1")
    assert sevennet.instruction_order_weights("0.11.0.dev0")
    assert not sevennet.instruction_order_weights("0.11.0")
    assert not sevennet.instruction_order_weights("0.13.0")
