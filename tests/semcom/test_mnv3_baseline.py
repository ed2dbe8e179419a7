"""MobileNetV3 DJSCC baselines: the device/server split, symbol accounting and power normalisation."""

from types import SimpleNamespace

import pytest
import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

from thesis.semcom.controller import methods
from thesis.semcom.mobilenet import FeatureLink, SplitMobileNet
from thesis.semcom.mobilenet_pipeline import Mnv3Module, evaluate_split_grid, pipelines
from thesis.semcom.packet import sent_symbols


def tiny_mobilenet(name: str = "mobilenetv3_small_100") -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=4).eval()


@pytest.mark.parametrize("name", ["mobilenetv3_small_100", "mobilenetv3_large_100"])
def test_split_forward_equals_the_unsplit_model(name):
    net = tiny_mobilenet(name)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = net(images)
        for split in range(1, len(net.blocks)):
            model = SplitMobileNet(net, split).eval()
            logits, packet = model(images)           # no ratio: the link is bypassed
            assert packet is None
            torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(model.server(model.device(images)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_packet_symbols_match_the_encoder_output(kind):
    model = SplitMobileNet(tiny_mobilenet(), split=3)
    ratios = [0.005, 0.1, 0.25, 0.5]
    model.attach_link(FeatureLink(model.channels, ratios, kind))
    model.eval()
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        features = model.device(images)
        for ratio in ratios:
            codec = model.link.codec(ratio)
            if kind == "cnn":
                encoded = codec.encoder(features)                 # (B, 2 o_r, H, W): real and imaginary halves
                expected = encoded.shape[1] // 2 * encoded.shape[2] * encoded.shape[3]
            else:
                encoded = codec.mlp.real(features.flatten(2).transpose(1, 2))    # (B, H * W, o_r)
                expected = encoded.shape[1] * encoded.shape[2]
            _, packet = model(images, ratio, 10.0)
            assert sent_symbols(packet).tolist() == [expected] * len(images)
            grid = evaluate_split_grid(model, DataLoader(TensorDataset(images, torch.zeros(3, dtype=torch.long)),
                                                         batch_size=2), [ratio], [None])
            assert grid.rho == pytest.approx(torch.full((3, 1), expected / (3 * 64 * 64)).numpy())


def test_symbol_count_on_the_vit_scale():
    """Split after 3 stages of MNv3-Small at 224 px: 40 channels on 14 x 14 positions, so r = 0.1 gives
    o_r = 4 symbols per position and q = 784 (the ViT AE sends 197 tokens x 19 symbols at d = 192)."""
    model = SplitMobileNet(tiny_mobilenet(), split=3)
    model.attach_link(FeatureLink(model.channels, [0.1], "cnn"))
    with torch.no_grad():
        _, packet = model.eval()(torch.randn(1, 3, 224, 224), 0.1, None)
    assert model.channels == 40
    assert sent_symbols(packet).item() == 14 * 14 * 4


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_power_normalisation_gives_unit_average_power(kind):
    torch.manual_seed(1)
    link = FeatureLink(24, [0.25], kind)
    features = 5.0 * torch.randn(4, 24, 6, 6) + 3.0
    _, packet = link(features, 0.25, None)
    power = packet.abs().pow(2)
    torch.testing.assert_close(power.mean(dim=(1, 2)), torch.ones(4))       # (1/q) ||s||^2 = 1 per packet
    per_token = FeatureLink(24, [0.25], kind, normalize="per_token")
    per_token.load_state_dict(link.state_dict())
    _, packet = per_token(features, 0.25, None)
    torch.testing.assert_close(packet.abs().pow(2).mean(-1), torch.ones(4, 36))


def test_channel_noise_reaches_the_server_only_with_an_snr():
    model = SplitMobileNet(tiny_mobilenet(), split=2)
    model.attach_link(FeatureLink(model.channels, [0.5], "cnn"))
    model.eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        clean_a, _ = model(images, 0.5, None)
        clean_b, _ = model(images, 0.5, None)
        noisy, _ = model(images, 0.5, -10.0)
    torch.testing.assert_close(clean_a, clean_b)
    assert not torch.allclose(clean_a, noisy)


def test_configuration_errors_name_the_fix():
    net = tiny_mobilenet()
    with pytest.raises(ValueError, match="split must be in"):
        SplitMobileNet(net, len(net.blocks))
    with pytest.raises(ValueError, match="codec must be one of"):
        FeatureLink(16, [0.5], "transformer")
    with pytest.raises(ValueError, match="no codec for r=0.3"):
        FeatureLink(16, [0.5]).codec(0.3)
    with pytest.raises(Exception, match="method.mnv3.codecs"):
        pipelines(["resnet"])
    assert set(pipelines(["cnn"])) == {"mnv3cnn_robust", "mnv3cnn_noiseless"}


def test_frozen_backbone_training_updates_only_the_codecs():
    model = SplitMobileNet(tiny_mobilenet(), split=2)
    model.attach_link(FeatureLink(model.channels, [0.25], "cnn"))
    module = Mnv3Module(model, regime="robust", freeze_backbone=True).train()
    assert not model.net.training                  # batch-norm statistics stay as trained
    loss, logits, _ = module.loss_and_logits((torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])))
    loss.backward()
    assert logits.shape == (4, 4)
    assert all(p.grad is None for p in model.net.parameters())
    assert all(p.grad is not None for p in model.link.parameters())


def test_controller_adds_only_the_cnn_baseline():
    ctx = SimpleNamespace(mnv3_pipelines=pipelines(["cnn", "mlp"]))
    assert methods(ctx) == {"adaptive": "Proposal", "vitae": "ViT AE", "mnv3cnn": "MNV3 CNN"}
    assert methods(SimpleNamespace(mnv3_pipelines={})) == {"adaptive": "Proposal", "vitae": "ViT AE"}
