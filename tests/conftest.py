"""Shared fixtures (helpers that are not fixtures live in tests/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ltx.models.explained import ExplainedModel
from tests.helpers import tiny_explained


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(params=["ltx_shapes_vit", "ltx_shapes_resnet"])
def explained(request: pytest.FixtureRequest) -> ExplainedModel:
    """Each of the two embedded-default architectures, random weights."""
    return tiny_explained(request.param)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One black-box cache for the whole session: tiny black boxes are trained once."""
    return tmp_path_factory.mktemp("ltx-cache")
