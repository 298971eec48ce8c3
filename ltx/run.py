"""`python -m ltx.run [overrides]`: compose the config, run the pipeline, return the sweep metric.

Thin on purpose (as in lightning-hydra-template): everything happens in `ltx.pipeline`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from ltx.pipeline import run_pipeline  # heavy imports after Hydra has parsed the command line

    return run_pipeline(cfg)


if __name__ == "__main__":
    main()
