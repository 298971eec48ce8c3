import warnings

import pytest

from ltx.lit import expected_lightning_warnings


def test_expected_lightning_warnings_silences_only_the_expected_ones():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with expected_lightning_warnings():
            warnings.warn("Found 119 module(s) in eval mode at the start of training.")
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
            warnings.warn("Checkpoint directory /run/checkpoints exists and is not empty.")
            warnings.warn("something the user should see")
    assert [str(w.message) for w in caught] == ["something the user should see"]


def test_expected_lightning_warnings_restores_the_filters():
    with expected_lightning_warnings():
        pass
    with pytest.warns(UserWarning, match="eval mode"):
        warnings.warn("Found 3 module(s) in eval mode at the start of training.")
