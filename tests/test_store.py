import pytest
import torch

from ltx.store import MapKey, MapStore, read_results, write_results


def _batch(indices):
    index = torch.tensor(indices)
    return {"index": index, "maps": index[:, None, None].float().expand(-1, 4, 4).clone(),
            "classes": index % 3, "labels": index % 2}


def test_shards_merge_sorted_and_deduplicated(tmp_path):
    store, key = MapStore(tmp_path), MapKey("vit", "ltx", "predicted")
    store.write(key, _batch([5, 1]), setting="steps=25")
    store.write(key, _batch([3, 1]), rank=1, setting="steps=25")
    assert store.done(key) == {1, 3, 5}
    loaded = store.load(key)
    assert loaded["index"].tolist() == [1, 3, 5]
    assert torch.equal(loaded["maps"][:, 0, 0], torch.tensor([1.0, 3.0, 5.0]))
    assert store.keys() == [key] and store.setting(key) == "steps=25"
    assert store.setting(MapKey("vit", "ltx", "target")) is None  # nothing saved: not "no settings"
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_missing_maps_say_where_they_were_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="vit/ltx/target"):
        MapStore(tmp_path).load(MapKey("vit", "ltx", "target"))


def test_results_roundtrip(tmp_path):
    rows = [dict(backbone="vit", method="ltx", class_mode="predicted", metric="gt_auroc", value=0.91)]
    write_results(tmp_path / "results.csv", rows)
    assert read_results(tmp_path / "results.csv") == rows
    assert (tmp_path / "results.csv").read_text().splitlines()[0] == "backbone,method,class_mode,metric,value"


def test_saved_maps_reads_the_rows_asked_for_across_shards(tmp_path):
    from ltx.store import SavedMaps

    store, key = MapStore(tmp_path), MapKey("vit", "rise", "predicted")
    store.write(key, _batch([5, 1]))
    store.write(key, _batch([3]), rank=1)
    found, classes, maps = SavedMaps(store, key).get(torch.tensor([3, 2, 5]))
    assert found.tolist() == [True, False, True]
    assert classes.tolist() == [0, -1, 2]
    assert maps[:, 0, 0].tolist() == [3.0, 0.0, 5.0]
    assert SavedMaps(store, MapKey("vit", "rise", "target")).get(torch.tensor([1]))[2] is None
