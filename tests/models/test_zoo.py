import pytest
import torch
from safetensors.torch import save_file

from ltx.models.zoo import (ModelSpec, Settings, WeightsUnavailable, cache_key, checkpoint_spec,
                            create_network, load_weights, save_network, wrap)


def test_shapes_models_are_timm_models_with_their_data_config():
    import timm

    for name, family in [("ltx_shapes_vit", "vit"), ("ltx_shapes_resnet", "cnn")]:
        network = timm.create_model(name, num_classes=8)
        explained = wrap(network, name=name, image_size=64)
        assert explained.family == family and explained.num_classes == 8
        assert explained.mean.flatten().tolist() == [0.5, 0.5, 0.5]
        assert explained(torch.rand(2, 3, 64, 64)).shape == (2, 8)


def test_explained_model_is_frozen_and_stays_in_eval_mode():
    explained = wrap(create_network("ltx_shapes_resnet", num_classes=8), name="r", image_size=64)
    explained.train()
    assert not explained.model.training
    assert not any(p.requires_grad for p in explained.parameters())
    images = torch.rand(1, 3, 64, 64, requires_grad=True)
    explained(images).sum().backward()
    assert images.grad is not None  # only input gradients are used


def test_wrong_image_size_is_a_clear_error():
    explained = wrap(create_network("ltx_shapes_vit", num_classes=8), name="vit", image_size=64)
    with pytest.raises(ValueError, match="expects 64x64 images, got \\(32, 32\\)"):
        explained(torch.rand(1, 3, 32, 32))


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="vit_base_patch16_224"):
        create_network("vit_bse_patch16_224", num_classes=10)
    with pytest.raises(ValueError, match="resnet101"):
        create_network("resnet1010.tv_in1k", num_classes=10)


def test_pretrained_tags_are_accepted():
    """The paper's weights are named with a tag: vit_base_patch16_224.orig_in21k_ft_in1k."""
    network = create_network("resnet18.tv_in1k", num_classes=3)
    assert network.num_classes == 3


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_checkpoints_load(tmp_path, suffix):
    source = create_network("ltx_shapes_resnet", num_classes=8)
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), str(path))
    else:
        torch.save({"state_dict": source.state_dict()}, path)
    loaded = create_network("ltx_shapes_resnet", num_classes=8, weights=str(path))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))


def test_missing_checkpoint_says_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="looked for .*nope.safetensors.*backbone.weights"):
        create_network("ltx_shapes_vit", num_classes=8, weights=str(tmp_path / "nope.safetensors"))


def test_wrong_architecture_checkpoint_names_the_differing_keys(tmp_path):
    path = tmp_path / "vit.safetensors"
    save_file(create_network("ltx_shapes_vit", num_classes=8).state_dict(), str(path))
    with pytest.raises(ValueError, match="does not match the architecture ResNet: 80 missing keys "
                                         "\\(conv1.weight, bn1.weight, bn1.bias, ...\\); 92 unexpected keys"):
        load_weights(create_network("ltx_shapes_resnet", num_classes=8), path)
    save_file(create_network("ltx_shapes_resnet", num_classes=8).state_dict(), str(path))
    with pytest.raises(ValueError, match="2 tensors of another shape, checkpoint vs model \\(fc.weight "
                                         "\\(8, 256\\) vs \\(3, 256\\), fc.bias .*number of classes"):
        load_weights(create_network("ltx_shapes_resnet", num_classes=3), path)


def test_number_of_classes_and_architecture_from_the_checkpoint(tmp_path):
    path = tmp_path / "resnet.safetensors"
    save_file(create_network("ltx_shapes_resnet", num_classes=5).state_dict(), str(path),
              metadata={"model": "ltx_shapes_resnet"})
    assert checkpoint_spec(path).name == "ltx_shapes_resnet"
    assert create_network("ltx_shapes_resnet", weights=str(path)).num_classes == 5
    timm_style = tmp_path / "train.pth.tar"  # timm's training checkpoints name the architecture as 'arch'
    torch.save({"arch": "ltx_shapes_resnet", "epoch": 3, "state_dict": {}}, timm_style)
    assert checkpoint_spec(timm_style).name == "ltx_shapes_resnet"


def test_a_saved_networks_spec_is_read_back(tmp_path):
    """Input size, normalisation (float32 buffers read back to 7 digits) and model arguments travel in the
    safetensors metadata; a file without them reads back as not known (None)."""
    network = create_network("ltx_shapes_vit", num_classes=3, img_size=32)
    explained = wrap(network, name="ltx_shapes_vit", image_size=32, mean=[0.485, 0.456, 0.406], std=[0.5] * 3)
    spec = ModelSpec(name="ltx_shapes_vit", image_size=32, mean=tuple(explained.mean.flatten().tolist()),
                     std=(0.5,) * 3, model_kwargs={"img_size": 32})
    save_network(tmp_path / "m.safetensors", network, spec)
    assert checkpoint_spec(tmp_path / "m.safetensors") == ModelSpec(
        "ltx_shapes_vit", 32, (0.485, 0.456, 0.406), (0.5, 0.5, 0.5), {"img_size": 32})
    save_file(network.state_dict(), str(tmp_path / "plain.safetensors"))
    assert checkpoint_spec(tmp_path / "plain.safetensors") == ModelSpec()
    with pytest.raises(ValueError, match="unreadable metadata"):
        ModelSpec.from_metadata({"model": "x", "mean": "[0.5,"})


class Pickled:
    """Stands for any Python object in a checkpoint: loading it would run arbitrary code."""


@pytest.mark.parametrize("content, expected", [
    ({"state_dict": Pickled()}, "pickled Python objects are never loaded"),
    (b"\x00not a checkpoint", "cannot read checkpoint"),
    ([torch.zeros(2)], "holds no state dict"),
])
def test_unsafe_or_corrupt_checkpoints_are_refused(tmp_path, content, expected):
    path = tmp_path / "model.pth"
    path.write_bytes(content) if isinstance(content, bytes) else torch.save(content, path)
    with pytest.raises(ValueError, match=expected):
        load_weights(create_network("ltx_shapes_resnet", num_classes=8), path)
    broken = tmp_path / "model.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(ValueError, match="cannot read checkpoint .*model.safetensors"):
        load_weights(create_network("ltx_shapes_resnet", num_classes=8), broken)


def test_errors_name_the_callers_settings():
    cli = Settings(name="--model", weights="--model FILE")
    with pytest.raises(ValueError, match="unknown model 'vit_tiny_patch16_2244' \\(--model\\)"):
        create_network("vit_tiny_patch16_2244", settings=cli)
    with pytest.raises(FileNotFoundError, match="--model FILE"):
        create_network("ltx_shapes_vit", weights="/nowhere/model.pth", settings=cli)


def test_hub_failure_says_how_to_provide_weights(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("no network")
        return original(*args, **kwargs)

    original = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsUnavailable, match="OSError: no network.*backbone.weights=/path/to/model"):
        create_network("resnet18", num_classes=10, weights="hub")
    assert issubclass(WeightsUnavailable, FileNotFoundError)  # a user error: one line, no traceback


def test_cache_key_depends_on_config():
    assert cache_key({"a": 1}, {"seed": 0}) == cache_key({"a": 1}, {"seed": 0})
    assert cache_key({"a": 1}, {"seed": 0}) != cache_key({"a": 1}, {"seed": 1})
