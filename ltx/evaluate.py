"""`python -m ltx.evaluate run_dir=PATH [eval=SUITE]`: re-evaluate a run's saved maps, no recomputation.

The run's own config (`PATH/.hydra/config.yaml`) rebuilds the data and the explained models; an
`eval=` override swaps the metric suite. Results in PATH are rewritten. Errors the user can fix (a
run_dir that is not a run's) end with one line, as in `ltx.run`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ltx.run import report_user_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from ltx.pipeline import reevaluate

    reevaluate(cfg.run_dir, cfg.get("eval"))


if __name__ == "__main__":
    main()
