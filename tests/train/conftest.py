"""Fixtures of the training tests: a converted 8-channel MACE (mace-torch built, random weights)
and a tiny JAX-built MACE (see `common.tiny_mace`)."""

from __future__ import annotations

import pytest

from common import alloy_bundle, tiny_mace


@pytest.fixture(scope="session")
def bundle():
    return alloy_bundle(seed=1)


@pytest.fixture(scope="session")
def tiny_bundle():
    return tiny_mace()
