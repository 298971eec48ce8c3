"""The benchmark's own sanity check: the oracle against random maps, per black box."""

from __future__ import annotations

from ltx.metrics.validity import benchmark_validity, describe


def rows(oracle: dict[str, float], floor: dict[str, float], backbone: str = "vit") -> list[dict]:
    return [dict(backbone=backbone, method=method, class_mode=mode, metric=metric, value=value)
            for method, values in (("gt_mask", oracle), ("random", floor))
            for mode in ("predicted", "target") for metric, value in values.items()]


def test_an_oracle_that_beats_random_clearly_passes_and_each_rule_can_fail():
    floor = {"pos": 40.0, "neg": 40.0, "ins": 35.0, "del": 30.0, "gt_auroc": 0.5}
    good = {"pos": 20.0, "neg": 55.0, "ins": 50.0, "del": 15.0, "gt_auroc": 1.0}
    result = benchmark_validity(rows(good, floor))["vit"]
    assert result["passed"] and result["class_mode"] == "predicted"
    assert [c["metric"] for c in result["checks"]] == ["pos", "neg", "ins", "del"]  # perturbation metrics only
    for metric, value in [("pos", 20.1), ("neg", 54.9), ("ins", 49.9), ("del", 15.1)]:
        entry = benchmark_validity(rows({**good, metric: value}, floor))["vit"]
        assert not entry["passed"], metric
        assert [c["metric"] for c in entry["checks"] if not c["passed"]] == [metric]
        assert "NOT VALID" in describe("vit", entry) and f"{metric} oracle" in describe("vit", entry)


def test_a_check_shown_but_not_required_never_fails_the_verdict():
    floor = {"pos": 40.0, "road_lerf_acc": 75.0, "road_morf_acc": 75.0}
    entry = benchmark_validity(rows({"pos": 20.0, "road_lerf_acc": 80.0, "road_morf_acc": 20.0}, floor))["vit"]
    lerf = next(c for c in entry["checks"] if c["metric"] == "road_lerf_acc")
    assert not lerf["passed"] and not lerf["required"] and entry["passed"] and entry["failed"] == []
    assert "shown, not required" in describe("vit", entry)
    entry = benchmark_validity(rows({"pos": 20.0, "road_lerf_acc": 80.0, "road_morf_acc": 40.0}, floor))["vit"]
    assert entry["failed"] == ["road_morf_acc"]  # ROAD MoRF is required
    assert "required margin on road_morf_acc" in describe("vit", entry)


def test_the_shapes_leak_fails_and_a_run_without_the_references_has_no_block():
    # issue 14's measurement on the shapes ViT: the oracle's POS above random's
    entry = benchmark_validity(rows({"pos": 32.8, "neg": 49.6}, {"pos": 31.7, "neg": 40.0}))["vit"]
    assert not entry["passed"]
    only_random = [r for r in rows({"pos": 1.0}, {"pos": 2.0}) if r["method"] == "random"]
    assert benchmark_validity(only_random) == {}


def test_rise_metrics_scale_the_margin_with_their_auc():
    entry = benchmark_validity(rows({"ins_rise": 0.70}, {"ins_rise": 0.50}))["vit"]
    assert entry["checks"][0]["bound"] == 0.5 + 0.15 and entry["passed"]


def test_faithfulness_places_each_method_between_random_and_the_oracle():
    from ltx.metrics.validity import faithfulness_rows

    floor = {"pos": 40.0, "neg": 40.0, "gt_auroc": 0.5}
    results = rows({"pos": 20.0, "neg": 60.0, "gt_auroc": 1.0}, floor)
    results += [dict(backbone="vit", method="ltx", class_mode="target", metric=m, value=v)
                for m, v in (("pos", 30.0), ("neg", 40.0), ("gt_auroc", 0.9))]
    values = {(r["method"], r["class_mode"]): r["value"] for r in faithfulness_rows(results)}
    assert values[("ltx", "target")] == (0.5 + 0.0) / 2  # halfway on POS, random on NEG; AUROC not counted
    assert values[("gt_mask", "predicted")] == 1.0 and values[("random", "target")] == 0.0
    assert faithfulness_rows([r for r in results if r["method"] != "gt_mask"]) == []  # no oracle: no scale
