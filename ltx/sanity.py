"""`python -m ltx.sanity run_dir=PATH [sanity.num_images=16 sanity.methods=[...]]`: sanity checks
(Adebayo et al., 2018) of a finished run's methods: model randomisation and class sensitivity.

They recompute maps on changed models (`ltx.stages.sanity`), so they are a command of their own,
not an evaluation suite. The run's config rebuilds its data and black boxes; PATH/sanity.csv,
PATH/sanity_<backbone>.png and a printed table are written, nothing of the run is touched. Errors
the user can fix end with one line, as in `ltx.run`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ltx.run import report_user_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="sanity")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from ltx.stages.sanity import run_sanity

    run_sanity(cfg.run_dir, cfg.sanity)


if __name__ == "__main__":
    main()
