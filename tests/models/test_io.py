"""Model directories: a written model reads back exactly, and every kind of damage gives one
`BrokenModelError` (a ValueError) naming the file and the problem, with nothing else printed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from ase import Atoms

from equitrain_jax.calculator import Calculator
from equitrain_jax.data import atoms_to_graph, padded_device_graph
from equitrain_jax.models.io import BrokenModelError, load_model, save_model
from equitrain_jax.models.sevennet import SevenNetConfig
from equitrain_jax.potential import Potential

CONFIG = SevenNetConfig(
    atomic_numbers=(1, 8), node_irreps=("4x0e", "4x0e+2x1e", "4x0e"), conv_denominators=(1.0, 1.0),
    scale=(1.0, 1.0), shift=(0.0, 0.0), r_max=4.0, cutoff_on=3.5, num_bessel=4, radial_mlp=(8,), readout_hidden=4,
)


def fresh_variables(config: SevenNetConfig, seed: int = 0) -> dict:
    """Random variables of the shapes ``config``'s module declares (shapes from an abstract init)."""
    graph = padded_device_graph(atoms_to_graph(Atoms("OH", positions=[[0, 0, 0], [0, 0, 1]]), config.r_max,
                                               config.atomic_numbers), np.float32)
    shapes = jax.eval_shape(config.module(np.float32).init, jax.random.PRNGKey(seed), graph)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda x: rng.normal(size=x.shape).astype(x.dtype), shapes)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny SevenNet-architecture model with fresh weights (no torch needed)."""
    return save_model(tmp_path_factory.mktemp("models") / "good", CONFIG, fresh_variables(CONFIG))


def test_saved_model_reads_back(model_dir):
    bundle = load_model(model_dir)
    assert bundle.config == CONFIG
    expected = fresh_variables(CONFIG)
    assert jax.tree_util.tree_structure(bundle.variables) == jax.tree_util.tree_structure(expected)
    for mine, theirs in zip(jax.tree_util.tree_leaves(bundle.variables), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_array_equal(mine, theirs)


def corrupt_json(directory: Path) -> None:
    (directory / "config.json").write_text('{"format": "equitrain-jax/sevennet", "r_max": 4.0,,}')


def drop_key(directory: Path) -> None:
    data = json.loads((directory / "config.json").read_text())
    del data["node_irreps"]
    (directory / "config.json").write_text(json.dumps(data))


def bad_value(directory: Path) -> None:
    data = json.loads((directory / "config.json").read_text())
    data["conv_denominators"] = 3
    (directory / "config.json").write_text(json.dumps(data))


def remove_params(directory: Path) -> None:
    shutil.rmtree(directory / "params")


def empty_params(directory: Path) -> None:
    shutil.rmtree(directory / "params")
    (directory / "params").mkdir()


def truncate_params(directory: Path) -> None:
    for path in (directory / "params").rglob("*"):
        if path.is_file() and path.stat().st_size > 1000:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def other_architecture(directory: Path) -> None:
    """Parameters of a model with other channel counts under this config."""
    other = SevenNetConfig(**{**CONFIG.__dict__, "node_irreps": ("6x0e", "6x0e+2x1e", "6x0e")})
    save_model(directory, other, fresh_variables(other))
    (directory / "config.json").write_text(json.dumps({"format": CONFIG.FORMAT, **CONFIG.to_json()}))


def extra_layer(directory: Path) -> None:
    """Parameters of a deeper model (one more interaction) under this config."""
    deeper = SevenNetConfig(**{**CONFIG.__dict__, "node_irreps": ("4x0e", "4x0e+2x1e", "4x0e", "4x0e"),
                               "conv_denominators": (1.0, 1.0, 1.0)})
    save_model(directory, deeper, fresh_variables(deeper))
    (directory / "config.json").write_text(json.dumps({"format": CONFIG.FORMAT, **CONFIG.to_json()}))


DAMAGE = {
    "corrupted config.json": (corrupt_json, r"config\.json: not valid JSON"),
    "missing key": (drop_key, r"config\.json: SevenNet config keys missing: \['node_irreps'\]"),
    "invalid value": (bad_value, r"config\.json: conv_denominators must be a list, got 3"),
    "no params/": (remove_params, r"params: missing"),
    "empty params/": (empty_params, r"params: empty"),
    "truncated parameter file": (truncate_params, r"params: .*(damaged|no readable)"),
    "other architecture": (other_architecture, r"params: the parameters do not fit the architecture in config\.json"),
    "extra layer": (extra_layer, r"params: the parameters do not fit .* variable\(s\) the model does not use: "
                                 r"\['params'\]\['interactions_2'\]"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_broken_model_directory_gives_one_named_error(model_dir, tmp_path, capfd, damage):
    """load_model, and through it Potential and Calculator: one ValueError whose message names the
    directory, the file and the problem, and nothing printed (no orbax, absl or asyncio noise)."""
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    spoil, pattern = DAMAGE[damage]
    spoil(broken)
    capfd.readouterr()
    for load in (load_model, Potential, Calculator):
        with pytest.raises(BrokenModelError, match=pattern) as caught:
            load(broken)
        assert str(broken) in str(caught.value)
        assert isinstance(caught.value, ValueError)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)


def test_unreadable_parameters_are_not_called_damaged(model_dir, monkeypatch):
    """A refused permission (orbax wraps the OS's error; as root here, no file can refuse it, so
    the restore raises it) is named as such, not as damage."""
    import orbax.checkpoint as ocp

    def refuse(*args, **kwargs):
        try:
            raise PermissionError(13, "Permission denied", "params/d/0.0")
        except PermissionError as error:
            raise ValueError("tensorstore: failed to read chunk") from error

    monkeypatch.setattr(ocp.PyTreeCheckpointer, "restore", refuse)
    with pytest.raises(BrokenModelError, match=r"params: parameter files not readable by this user") as caught:
        load_model(model_dir)
    assert "damaged" not in str(caught.value)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an equitrain-jax model directory"):
        load_model(tmp_path)
