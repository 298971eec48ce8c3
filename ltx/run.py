"""`python -m ltx.run [overrides]`: compose the config, run the pipeline, return the sweep metric
(the value of `optimized_metric` in the results, for Hydra sweepers such as conf/hparams_search).

Thin on purpose (as in lightning-hydra-template): everything happens in `ltx.pipeline`. Errors
the user can fix (a missing dataset, checkpoint or config value) end the run with one line that
says what to do, not a stack trace; `LTX_DEBUG=1` shows the trace.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

log = logging.getLogger("ltx")

T = TypeVar("T")
R = TypeVar("R")

#: Exceptions whose message is written for the user (they name the problem and the fix).
USER_ERRORS = (FileNotFoundError, NotADirectoryError, PermissionError, ValueError, MissingMandatoryValue)


def report_user_errors(func: Callable[[T], R]) -> Callable[[T], R]:
    """Turn user-fixable errors into one log line and exit code 1 (full trace with LTX_DEBUG=1).
    `functools.wraps` keeps `__wrapped__`, which Hydra follows to find the config relative to the
    entry point's own module (`ltx.evaluate` decorates its main with this one)."""

    @functools.wraps(func)
    def wrapped(cfg: T) -> R:
        try:
            return func(cfg)
        except (*USER_ERRORS, InstantiationException) as raised:
            # Hydra wraps a constructor's error (e.g. a negative loss weight): report the cause.
            err = raised.__cause__ if isinstance(raised, InstantiationException) else raised
            if os.environ.get("LTX_DEBUG") or not isinstance(err, USER_ERRORS):
                raise
            message = str(err)
            if isinstance(err, MissingMandatoryValue):
                key = getattr(err, "full_key", None) or "the key"
                message = f"{message.splitlines()[0]}: set it on the command line ({key}=...), see its config file"
            log.error("%s: %s", type(err).__name__, message)
            print(f"error: {message}\n(set LTX_DEBUG=1 for the full traceback)", file=sys.stderr)
            sys.exit(1)

    return wrapped


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    from ltx.pipeline import run_pipeline  # heavy imports after Hydra has parsed the command line

    return run_pipeline(cfg)


if __name__ == "__main__":
    main()
