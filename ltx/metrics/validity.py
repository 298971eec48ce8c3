"""Can a benchmark with ground truth rank methods at all? Its oracle against random maps.

The ground-truth mask used as a map (`gt_mask`, ltx/methods/oracle.py) is a perfect localizer:
removing its pixels first must destroy the prediction, and keeping them must keep it, clearly
better than random maps. When it does not (black pixels leak the removed region's outline, and
on a shape-coded data set the outline is the class: PROTOCOLS.md, "Validity of a perturbation
benchmark"), the perturbation metrics reward maps that avoid the evidence and their rankings
mean nothing. Checked per black box on every perturbation metric of the run:

- a metric where lower is better (POS, DEL, ROAD MoRF): oracle <= `max_ratio` × random;
- a metric where higher is better (NEG, INS, ROAD LeRF): oracle >= random + `min_margin` × the
  metric's scale (15 points of an AUC ×100).

A metric can declare its check shown but not required (`validity_required`: ROAD LeRF, whose
random floor sits near the clean accuracy by design, ltx.metrics.road).

Both maps ignore the explained class and the scores use the ground-truth label, so one class
mode's rows speak for the black box.

On a valid benchmark every method's perturbation results can also be read on one scale:
`faithfulness` is the mean, over the perturbation metrics, of where the method sits between random
maps (0) and the oracle (1): the criterion by which settings are chosen on validation images.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ORACLE, FLOOR = "gt_mask", "random"
#: the result name of the summary on the random (0) to oracle (1) scale, higher is better
FAITHFULNESS = "faithfulness"


def _rule(metric: str, max_ratio: float, min_margin: float) -> tuple[bool, float, bool] | None:
    """(lower is better, bound parameter, required) for a perturbation metric, None for any other."""
    from ltx.metrics import METRICS
    from ltx.metrics.perturbation import PerturbationCurve

    cls = METRICS.get(metric)
    if cls is None or not issubclass(cls, PerturbationCurve):
        return None
    lower = not cls.higher_is_better
    return lower, max_ratio if lower else min_margin * cls.auc_scale, cls.validity_required


def benchmark_validity(rows: Iterable[dict[str, Any]], *, max_ratio: float = 0.5,
                       min_margin: float = 0.15) -> dict[str, dict[str, Any]]:
    """Per backbone whose results hold both the oracle and random maps: the class mode read, one
    check per perturbation metric ({metric, oracle, random, bound, rule, passed, required}) and
    `passed` (every required check passed) and `failed` (the required checks' metrics that did not)."""
    values: dict[tuple[str, str, str], dict[str, float]] = {}
    for row in rows:
        if row["method"] in (ORACLE, FLOOR):
            values.setdefault((row["backbone"], row["class_mode"], row["metric"]), {})[row["method"]] = row["value"]
    result: dict[str, dict[str, Any]] = {}
    for (backbone, mode, metric), pair in values.items():
        rule = _rule(metric, max_ratio, min_margin)
        if rule is None or len(pair) < 2 or result.get(backbone, {}).get("class_mode", mode) != mode:
            continue
        lower, parameter, required = rule
        oracle, floor = pair[ORACLE], pair[FLOOR]
        bound = parameter * floor if lower else floor + parameter
        check = dict(metric=metric, oracle=oracle, random=floor, bound=bound,
                     rule=f"<= {parameter:g} x random" if lower else f">= random + {parameter:g}",
                     passed=bool(oracle <= bound if lower else oracle >= bound), required=required)
        entry = result.setdefault(backbone, {"class_mode": mode, "checks": []})
        entry["checks"].append(check)
    for entry in result.values():
        entry["failed"] = [c["metric"] for c in entry["checks"] if c["required"] and not c["passed"]]
        entry["passed"] = not entry["failed"]
    return result


def describe(backbone: str, entry: dict[str, Any]) -> str:
    """One paragraph for the log: every check, then the verdict."""
    checks = "; ".join(f"{c['metric']} oracle {c['oracle']:.4g} vs random {c['random']:.4g} "
                       f"({'needs' if c['required'] else 'shown, not required:'} {c['rule']}: "
                       f"{'ok' if c['passed'] else 'FAILED' if c['required'] else 'no'})" for c in entry["checks"])
    verdict = ("valid" if entry["passed"] else
               f"NOT VALID: the ground-truth mask does not beat random maps by the required margin on "
               f"{', '.join(entry['failed'])}, so these perturbation metrics cannot rank methods on this data "
               "(PROTOCOLS.md, 'Validity of a perturbation benchmark')")
    return f"benchmark validity {backbone}: {verdict}. {checks}"


def faithfulness_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A `faithfulness` row per (backbone, method, class mode) with perturbation results, where the
    backbone's oracle and random results exist and differ: mean of (value − random) / (oracle −
    random) over the perturbation metrics both references have (oracle and random in the same class
    mode's rows, which are those of any mode)."""
    refs: dict[tuple[str, str, str], dict[str, float]] = {}
    for row in rows:
        if row["method"] in (ORACLE, FLOOR) and _rule(row["metric"], 0.5, 0.15) is not None:
            refs.setdefault((row["backbone"], row["class_mode"], row["metric"]), {})[row["method"]] = row["value"]
    parts: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        ref = refs.get((row["backbone"], row["class_mode"], row["metric"]), {})
        if len(ref) == 2 and ref[ORACLE] != ref[FLOOR]:
            key = (row["backbone"], row["method"], row["class_mode"])
            parts.setdefault(key, []).append((row["value"] - ref[FLOOR]) / (ref[ORACLE] - ref[FLOOR]))
    return [dict(backbone=b, method=m, class_mode=c, metric=FAITHFULNESS, value=sum(v) / len(v))
            for (b, m, c), v in parts.items()]
