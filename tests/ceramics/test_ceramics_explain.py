"""Explanations: Grad-CAM and guided backprop put the mass on planted evidence (a hand-built network
whose evidence is known, and a tiny ResNet trained for a few steps), ViT attention capture and
rollout, and the localisation numbers."""

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from thesis.ceramics import explain
from thesis.core.errors import ConfigError

S, P = 48, 12


class RedDetector(nn.Module):
    """Known evidence: channel 0 of the last stage fires on red pixels only (R - G - B - 0.5 > 0),
    channel 1 on nothing in particular; class 1 reads channel 0, class 0 channel 1."""

    def __init__(self):
        super().__init__()
        self.layer4 = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
        with torch.no_grad():
            self.layer4[0].weight.copy_(torch.tensor([[1.0, -1.0, -1.0], [0.0, 1.0, 0.0]]).view(2, 3, 1, 1))
            self.layer4[0].bias.copy_(torch.tensor([-0.5, 0.0]))
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.layer4(x).mean((2, 3)))


def planted(n: int, seed: int):
    """Grey noise; class-1 images carry a red P x P patch at a random place (the only evidence)."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.5 + 0.15 * torch.randn(n, 3, S, S, generator=gen)
    y = torch.randint(0, 2, (n,), generator=gen)
    masks = torch.zeros(n, S, S, dtype=torch.bool)
    for i in range(n):
        r, c = torch.randint(0, S - P, (2,), generator=gen).tolist()
        if y[i] == 1:
            x[i, :, r:r + P, c:c + P] = torch.tensor([1.0, 0.1, 0.1])[:, None, None]
            masks[i, r:r + P, c:c + P] = True
    return x, y, masks


def test_hand_built_network_grad_cam_and_guided_backprop_sit_on_the_patch():
    model = RedDetector().eval()
    x, y, masks = planted(16, 0)
    keep = y == 1
    result = explain.guided_grad_cam(model, x[keep], 1, layer=model.layer4)
    for cam, saliency, mask in zip(result.cam.numpy(), result.saliency.numpy(), masks[keep].numpy()):
        assert cam[mask].sum() / cam.sum() > 0.99
        assert saliency[mask].sum() / saliency.sum() > 0.99
        assert explain.energy_in_mask(cam, mask) == pytest.approx(1 / mask.mean(), rel=0.01)
        assert explain.pointing_hit(cam, mask) == 1.0


class SmallCNN(nn.Module):
    """A tiny CNN with local evidence (receptive field 7 px, one stride-2 conv): its last stage is
    Grad-CAM's layer, at half the input resolution."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                                  nn.ReLU())
        self.layer4 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        return self.fc(self.layer4(self.stem(x)).mean((2, 3)))


def train(model: nn.Module, steps: int, lr: float) -> nn.Module:
    optimiser = torch.optim.Adam(model.parameters(), lr)
    for step in range(steps):
        x, y, _ = planted(32, 100 + step)
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.mark.slow  # the hand-built network above checks the same property in the default suite
def test_grad_cam_of_a_tiny_trained_cnn_puts_most_mass_on_the_planted_patch():
    torch.manual_seed(0)
    model = train(SmallCNN(), 60, 1e-2)
    x, y, masks = planted(48, 1)
    with torch.no_grad():
        assert (model(x).argmax(-1) == y).float().mean() > 0.95
    keep = y == 1
    result = explain.guided_grad_cam(model, x[keep], 1, layer=model.layer4)
    for cam, saliency, mask in zip(result.cam.numpy(), result.saliency.numpy(), masks[keep].numpy()):
        assert cam[mask].sum() / cam.sum() > 0.6                 # the patch is 6 % of the image
        assert cam[explain.dilate(mask, 2)].sum() / cam.sum() > 0.85
        assert saliency[mask].sum() / saliency.sum() > 0.6
        assert explain.pointing_hit(cam, mask) == 1.0


@pytest.fixture(scope="module")
def trained_resnet():
    """timm's ResNet-18 layout, tiny (one block per stage, widths 8-64, output stride 8: 6 x 6 Grad-CAM),
    trained for 60 steps to tell planted-patch images from plain ones."""
    torch.manual_seed(0)
    return train(timm.create_model("resnet18", pretrained=False, num_classes=2, layers=[1, 1, 1, 1],
                                   channels=[8, 16, 32, 64], stem_width=8, output_stride=8), 60, 3e-3)


@pytest.mark.slow
def test_grad_cam_of_a_trained_resnet_peaks_on_the_planted_patch(trained_resnet):
    """The dilated last stages spread the 6 x 6 map over about two cells around the patch, so the
    check is a peak on the patch and a clear preference for it rather than most of the mass."""
    x, y, masks = planted(48, 1)
    with torch.no_grad():
        assert (trained_resnet(x).argmax(-1) == y).float().mean() > 0.95
    keep = y == 1
    result = explain.grad_cam(trained_resnet, x[keep], 1)
    assert result.cam.shape == (int(keep.sum()), S, S)
    near, ratios, hits = [], [], []
    for cam, mask in zip(result.cam.numpy(), masks[keep].numpy()):
        around = explain.dilate(mask, 6)              # the patch and half a Grad-CAM cell around it (25 % of the image)
        near.append(cam[around].sum() / cam.sum())
        ratios.append(explain.energy_in_mask(cam, mask))
        hits.append(explain.pointing_hit(cam, mask, tolerance=4))
    assert np.mean(hits) >= 0.9
    assert np.mean(ratios) > 2.0                     # 1 = no preference for the patch
    assert np.mean(near) > 0.4                       # vs 0.25 for a map without preference


def test_random_init_grad_cam_does_not_prefer_the_patch():
    torch.manual_seed(1)
    model = timm.create_model("resnet18", pretrained=False, num_classes=2, layers=[1, 1, 1, 1],
                              channels=[8, 16, 32, 64], stem_width=8, output_stride=8).eval()
    x, y, masks = planted(48, 1)
    keep = y == 1
    cams = explain.grad_cam(model, x[keep], 1).cam.numpy()
    assert np.mean([explain.energy_in_mask(c, m) for c, m in zip(cams, masks[keep].numpy())]) < 3.0


def test_guided_relu_passes_only_positive_gradients_where_the_input_was_positive():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()
            self.c = torch.tensor([1.0, -2.0, 3.0, 4.0])

        def forward(self, x):
            return (self.act(x) * self.c).sum(-1, keepdim=True)

    model = Tiny()
    x = torch.tensor([[1.0, 2.0, -3.0, 0.5]])
    grads, _ = explain.guided_backprop(model, x, 0)
    assert torch.equal(grads, torch.tensor([[1.0, 0.0, 0.0, 4.0]]))     # negative c and negative input blocked
    x.requires_grad_(True)
    model(x).sum().backward()                                             # restored: the ordinary ReLU again
    assert torch.equal(x.grad, torch.tensor([[1.0, -2.0, 0.0, 4.0]]))
    with pytest.raises(ConfigError, match="nn.ReLU"):
        with explain.guided_relus(nn.Linear(2, 2)):
            pass


def vit():
    torch.manual_seed(0)
    return timm.create_model("deit_small_patch16_224", pretrained=False, num_classes=3, img_size=32, patch_size=8,
                             embed_dim=32, depth=3, num_heads=2).eval()


def test_vit_attention_capture_matches_an_explicit_computation():
    model = vit()
    x = torch.randn(2, 3, 32, 32)
    fused = [b.attn.fused_attn for b in model.blocks]
    attention, logits = explain.vit_attention(model, x)
    assert [b.attn.fused_attn for b in model.blocks] == fused             # restored
    assert attention.shape == (3, 2, 2, 17, 17)
    assert torch.allclose(attention.sum(-1), torch.ones(3, 2, 2, 17))
    with torch.no_grad():
        assert torch.allclose(logits, model(x), atol=1e-5)
        tokens = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        block = model.blocks[0]
        h = block.norm1(tokens)
        qkv = block.attn.qkv(h).reshape(2, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)
        expected = ((qkv[0] * block.attn.scale) @ qkv[1].transpose(-2, -1)).softmax(-1)
    assert torch.allclose(attention[0], expected, atol=1e-5)
    maps = explain.cls_attention(attention, model.num_prefix_tokens, explain.grid_of(model))
    assert maps.shape == (3, 2, 2, 4, 4)
    assert torch.allclose(maps.sum((-2, -1)), 1 - attention[..., 0, 0])


def test_rollout_of_uniform_attention_is_uniform():
    attention = torch.full((4, 1, 2, 17, 17), 1 / 17)
    roll = explain.rollout(attention, 1, (4, 4))
    assert torch.allclose(roll, torch.ones(1, 4, 4))


def test_entropy_energy_and_correlation_helpers():
    assert explain.normalised_entropy(torch.ones(1, 16)).item() == pytest.approx(1.0)
    assert explain.normalised_entropy(torch.eye(16)[:1]).item() == pytest.approx(0.0, abs=1e-6)
    mask = np.zeros((10, 10), bool)
    mask[:2] = True
    assert explain.energy_in_mask(np.ones((10, 10)), mask) == pytest.approx(1.0)
    assert explain.energy_in_mask(mask.astype(float), mask) == pytest.approx(5.0)
    assert np.isnan(explain.energy_in_mask(np.ones((10, 10)), np.zeros((10, 10), bool)))
    a = np.random.default_rng(0).random((8, 8))
    assert explain.pearson(a, 2 * a + 1) == pytest.approx(1.0)
    disk = explain.central_disk(8)
    assert disk[4, 4] and not disk[0, 0]
