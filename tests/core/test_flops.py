"""The FLOPs counter (multiply-add = 1 FLOP) against torch.utils.flop_counter and hand counts."""

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from thesis.core.flops import FlopCounter, count_flops


def torch_macs(fn) -> float:
    """torch's own count (2 FLOPs per multiply-add) halved, SDPA forced onto its math path."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops() / 2


def test_linear_hand_count():
    layer = nn.Linear(16, 8)
    assert count_flops(layer, torch.rand(4, 5, 16)).total == 4 * 5 * 16 * 8


@pytest.mark.parametrize(
    "module,shape",
    [
        (nn.Linear(32, 24), (3, 7, 32)),
        (nn.Conv2d(6, 12, 3, stride=2, padding=1, groups=3), (2, 6, 15, 15)),
        (nn.Conv1d(4, 8, 5), (2, 4, 30)),
        (nn.Sequential(nn.Linear(10, 40), nn.GELU(), nn.Linear(40, 10)), (5, 10)),
        (nn.MultiheadAttention(32, 4, batch_first=True), None),
    ],
)
def test_matches_torch_flop_counter(module, shape):
    torch.manual_seed(0)
    if isinstance(module, nn.MultiheadAttention):
        x = torch.rand(2, 9, 32)
        run = lambda: module(x, x, x, need_weights=False)  # noqa: E731
    else:
        x = torch.rand(shape)
        run = lambda: module(x)  # noqa: E731
    with FlopCounter(module) as counter, torch.no_grad():
        run()
    assert counter.report.total == torch_macs(run)


def test_tensor_products_match_torch():
    a, b = torch.rand(3, 4, 5), torch.rand(3, 5, 6)
    for fn in (lambda: a @ b, lambda: torch.bmm(a, b), lambda: torch.einsum("bij,bjk->bik", a, b),
               lambda: torch.baddbmm(torch.rand(3, 4, 6), a, b), lambda: torch.matmul(a[0], b[0])):
        with FlopCounter() as counter:
            fn()
        assert counter.report.total == torch_macs(fn) == pytest.approx(counter.report.total)


def test_sdpa_counts_both_products():
    q, k, v = torch.rand(2, 3, 7, 8), torch.rand(2, 3, 11, 8), torch.rand(2, 3, 11, 4)
    with FlopCounter() as counter:
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert counter.report.total == 2 * 3 * 7 * 11 * (8 + 4)
    assert counter.report.total == torch_macs(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))


def test_timm_vit_matches_torch_and_attributes_to_modules():
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=3).eval()
    x = torch.rand(2, 3, 64, 64)
    report = count_flops(model, x)
    assert report.total == torch_macs(lambda: model(x))
    assert report.under("blocks.0.mlp.fc1") == 2 * 17 * 192 * 768  # 16 patches + class token
    assert sum(report.under(f"blocks.{i}") for i in range(3)) + report.under("patch_embed") + report.under("head") == report.total


def test_vit_b16_cost_and_shares():
    """ViT-B/16 at 224 px: 17.56 GMACs (torchvision's card: 17.56 GFLOPS; fvcore with norms: 17.58).

    The q/k/v/o projections are ~31.7 % of the cost and the MLPs ~63.4 % (spec ch2_acm header).
    """
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    report = count_flops(model, torch.rand(1, 3, 224, 224))
    projections = sum(report.under(f"blocks.{i}.attn.{p}") for i in range(12) for p in ("qkv", "proj"))
    mlps = sum(report.under(f"blocks.{i}.mlp") for i in range(12))
    assert report.total / 1e9 == pytest.approx(17.56, abs=0.01)
    assert projections / report.total == pytest.approx(0.317, abs=0.002)
    assert mlps / report.total == pytest.approx(0.634, abs=0.002)


def test_counts_inside_inference_mode():
    layer = nn.Linear(8, 4)
    with torch.inference_mode():
        assert count_flops(layer, torch.rand(2, 8)).total == 2 * 8 * 4
