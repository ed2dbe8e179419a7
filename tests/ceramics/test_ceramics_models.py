"""Classifiers built through timm (sizes of Tables 11 and 14), the three initialisations, the frozen
backbone of transfer learning, and the metrics of Table 10."""

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf
from timm.models import save_for_hf

from thesis.ceramics.lightning import CeramicsClassifier
from thesis.ceramics.metrics import classification_metrics, confusion, largest_confusion, per_class_rows
from thesis.ceramics.models import build_classifier, freeze_backbone, is_vit, last_conv_stage
from thesis.core.errors import ConfigError
from thesis.core.fixtures import materialize


@pytest.mark.parametrize("name,millions", [("resnet18", 11.7), ("deit_small_patch16_224", 22.0)])
def test_thesis_architectures_have_the_thesis_sizes(name, millions):
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)   # 1000 ImageNet classes, as the tables count
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, rel=0.03)
    if name.startswith("deit"):
        assert (len(model.blocks), model.blocks[0].attn.num_heads, model.embed_dim) == (12, 6, 384)
        assert model.blocks[0].mlp.fc1.out_features == 1536 and model.patch_embed.patch_size == (16, 16)
    else:
        assert sum(len(getattr(model, f"layer{i}")) for i in range(1, 5)) == 8   # 8 residual blocks


def test_scratch_and_unknown_init():
    model = build_classifier("resnet18", "scratch", 10, model_args=OmegaConf.create({"channels": [8, 16, 32, 64]}))
    assert model.get_classifier().out_features == 10 and not is_vit(model)
    assert last_conv_stage(model) is model.layer4
    with pytest.raises(ConfigError, match="scratch, pretrained, synthetic_pretrain"):
        build_classifier("resnet18", "imagenet")
    with pytest.raises(ConfigError, match="model.checkpoint"):
        build_classifier("resnet18", "synthetic_pretrain")


def test_pretrained_weights_load_from_a_local_checkpoint_with_a_new_head(tmp_path):
    folder = materialize("timm_resnet_tiny", tmp_path)
    model = build_classifier("resnet18", "pretrained", 10, checkpoint=str(folder))
    source = timm.create_model("resnet18", pretrained=False, num_classes=3, layers=[1, 1, 1, 1],
                               channels=[8, 16, 32, 64], stem_width=8)
    from safetensors.torch import load_file
    source.load_state_dict(load_file(str(folder / "model.safetensors")))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 10


def test_synthetic_pretrain_round_trip_keeps_the_backbone(tmp_path):
    args = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    torch.manual_seed(0)
    texture_model = build_classifier("deit_small_patch16_224", "scratch", 20, model_args=args)
    save_for_hf(texture_model, str(tmp_path / "m"), model_args=args, safe_serialization=True)
    model = build_classifier("deit_small_patch16_224", "synthetic_pretrain", 10, checkpoint=str(tmp_path / "m"),
                             model_args=args)
    assert is_vit(model) and model.head.out_features == 10
    assert torch.equal(model.blocks[1].attn.qkv.weight, texture_model.blocks[1].attn.qkv.weight)


def test_head_only_training_freezes_the_backbone_and_its_batch_norm():
    model = build_classifier("resnet18", "scratch", 4, model_args={"channels": [8, 16, 32, 64], "stem_width": 8})
    module = CeramicsClassifier(model, num_classes=4, trainable="head")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    module.train()
    assert not model.bn1.training and model.fc.training
    before = model.bn1.running_mean.clone()
    model(torch.randn(4, 3, 32, 32))                                    # a training-mode forward pass
    assert torch.equal(model.bn1.running_mean, before)
    assert freeze_backbone(model) == ["fc.weight", "fc.bias"]
    with pytest.raises(ConfigError, match="scheduler"):
        CeramicsClassifier(model, scheduler="step")


def test_macro_metrics_and_confusion():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    scores = classification_metrics(labels, preds, 3)
    assert scores["acc"] == pytest.approx(4 / 6)
    assert scores["recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)         # macro: recall differs from accuracy
    assert scores["precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    matrix = confusion(labels, preds, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert largest_confusion(matrix) == (0, 1, 1)
    rows = per_class_rows(labels, preds, [1, 2, 3])
    assert [r["class_id"] for r in rows] == [1, 2, 3] and rows[1]["recall"] == 1.0


def test_paper_configs_fail_offline_with_clear_messages(compose_experiment, monkeypatch):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from thesis.core.errors import CheckpointError, DataNotFoundError
    from thesis.core.experiment import apply_scale

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = apply_scale(compose_experiment("ceramics_deit_small_pretrained", scale="paper"))
    assert cfg.model.name == "deit_small_patch16_224" and cfg.model.init == "pretrained"
    with pytest.raises(InstantiationException, match="offline") as raised:
        instantiate(cfg.model, num_classes=10)
    assert isinstance(raised.value.__cause__, CheckpointError)
    with pytest.raises(DataNotFoundError, match="private"):
        instantiate(cfg.data).setup()
