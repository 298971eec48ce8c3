"""The LightningModules of the method (black-box training, pretraining, per-instance finetuning)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# Warnings Lightning raises for every fit of ours that say nothing a user can act on.
EXPECTED_FIT_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode",  # the frozen explained model stays in eval mode by design
    "You defined a `validation_step` but have no",  # pretraining without validation images
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # raised inside Lightning by newer torch
)


@contextmanager
def expected_fit_warnings() -> Iterator[None]:
    """Silence EXPECTED_FIT_WARNINGS (and nothing else) while fitting."""
    with warnings.catch_warnings():
        for message in EXPECTED_FIT_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield
