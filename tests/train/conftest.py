"""The Al/Ni/Cu model of the training tests (seed 1)."""

from __future__ import annotations

import pytest

from common import alloy_bundle


@pytest.fixture(scope="session")
def bundle():
    return alloy_bundle(seed=1)
