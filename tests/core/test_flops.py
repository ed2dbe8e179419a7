"""The FLOPs counter (multiply-add = 1 FLOP) against torch.utils.flop_counter and hand counts."""

import pytest
import torch
from torch import nn

from thesis.core.flops import FlopCounter, count_flops


def torch_macs(fn) -> float:
    """torch's own count (2 FLOPs per multiply-add) halved, SDPA forced onto its math path
    (torch's counter has no rule for the fused CPU kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops() / 2


def test_linear_hand_count():
    batch, tokens, d_in, d_out = 4, 5, 16, 8
    report = count_flops(nn.Linear(d_in, d_out), torch.rand(batch, tokens, d_in))
    assert report.total == batch * tokens * d_in * d_out
    assert report.per_sample(batch) == tokens * d_in * d_out


@pytest.mark.parametrize(
    "module,shape",
    [
        (nn.Linear(32, 24), (3, 7, 32)),
        (nn.Conv2d(6, 12, 3, stride=2, padding=1, groups=3), (2, 6, 15, 15)),
        (nn.Conv1d(4, 8, 5), (2, 4, 30)),
        (nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), (2, 4, 5, 5)),
        (nn.Sequential(nn.Linear(10, 40), nn.GELU(), nn.Linear(40, 10)), (5, 10)),
    ],
    ids=["linear", "conv2d-groups-stride", "conv1d", "conv-transpose", "mlp"],
)
def test_modules_match_torch_flop_counter(module, shape):
    x = torch.rand(shape)
    assert count_flops(module, x).total == torch_macs(lambda: module(x))


@pytest.mark.parametrize(
    "fn",
    [
        lambda a, b: a @ b,
        lambda a, b: torch.bmm(a, b),
        lambda a, b: torch.matmul(a[0], b[0]),
        lambda a, b: torch.einsum("bij,bjk->bik", a, b),
        lambda a, b: torch.baddbmm(torch.rand(3, 4, 6), a, b),
        lambda a, b: torch.addmm(torch.rand(4, 6), a[0], b[0]),
    ],
    ids=["at", "bmm", "matmul", "einsum", "baddbmm", "addmm"],
)
def test_tensor_products_match_torch(fn):
    a, b = torch.rand(3, 4, 5), torch.rand(3, 5, 6)
    with FlopCounter() as counter:
        fn(a, b)
    assert counter.report.total == torch_macs(lambda: fn(a, b)) > 0


def test_sdpa_counts_both_products():
    q, k, v = torch.rand(2, 3, 7, 8), torch.rand(2, 3, 11, 8), torch.rand(2, 3, 11, 4)
    attend = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)  # noqa: E731
    with FlopCounter() as counter:
        attend()
    assert counter.report.total == 2 * 3 * 7 * 11 * (8 + 4) == torch_macs(attend)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval-fast-path"])
def test_multihead_attention(train):
    """Eval mode under no_grad would take PyTorch's fused MHA kernel; the counter still sees it all."""
    batch, seq, dim, heads = 2, 9, 32, 4
    mha = nn.MultiheadAttention(dim, heads, batch_first=True).train(train)
    x = torch.rand(batch, seq, dim)
    expected = batch * seq * dim * dim * 4 + batch * seq * seq * dim * 2  # q/k/v/o + QK^T and AV
    assert count_flops(mha, x, x, x, need_weights=False).total == expected
    assert torch_macs(lambda: mha.train().forward(x, x, x, need_weights=False)) == expected


def test_counts_inside_inference_mode():
    layer = nn.Linear(8, 4)
    with torch.inference_mode():
        assert count_flops(layer, torch.rand(2, 8)).total == 2 * 8 * 4


def test_nested_modules_are_charged_to_the_innermost_path():
    model = nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)))
    report = count_flops(model, torch.rand(3, 4))
    assert report.by_module == {"0": 3 * 4 * 8, "1.0": 3 * 8 * 8, "1.1": 3 * 8 * 2}
    assert report.under("1") == 3 * 8 * 10 and report.under("") == report.total


def test_counter_accumulates_and_removes_its_hooks():
    layer = nn.Linear(8, 4)
    counter = FlopCounter(layer)
    for _ in range(2):
        with counter, torch.no_grad():
            layer(torch.rand(3, 8))
    assert counter.report.total == 2 * 3 * 8 * 4
    assert not layer._forward_pre_hooks and not layer._forward_hooks
    assert torch.backends.mha.get_fastpath_enabled()


def test_timm_vit_matches_torch_and_attributes_to_modules():
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=3).eval()
    x = torch.rand(2, 3, 64, 64)
    report = count_flops(model, x)
    assert report.total == torch_macs(lambda: model(x))
    assert report.under("blocks.0.mlp.fc1") == 2 * 17 * 192 * 768  # 16 patches + class token
    parts = sum(report.under(f"blocks.{i}") for i in range(3)) + report.under("patch_embed") + report.under("head")
    assert parts == report.total


def test_vit_b16_cost_and_shares():
    """ViT-B/16 at 224 px (random init, on the meta device: shapes only, no arithmetic).

    This counter includes the linear layers, the patch-embedding convolution and attention's QK^T
    and AV; it leaves out norms, softmax, GELU and additions. fvcore, which also prices the norms,
    reports 17.58 GFLOPs; torchvision's model card 17.56. The q/k/v/o projections are ~31.7 % of
    the cost and the MLPs ~63.4 % (spec ch2_acm, header and B.4: shares of fvcore's 17.58 G; of
    this counter's smaller total they are 31.7 % and 63.5 %).
    """
    import timm

    with torch.device("meta"):
        model = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
        report = count_flops(model, torch.empty(1, 3, 224, 224))
    projections = sum(report.under(f"blocks.{i}.attn.{p}") for i in range(12) for p in ("qkv", "proj"))
    mlps = sum(report.under(f"blocks.{i}.mlp") for i in range(12))
    assert 17.5e9 <= report.total <= 17.6e9
    assert projections / report.total == pytest.approx(0.317, abs=0.002)
    assert mlps / report.total == pytest.approx(0.634, abs=0.002)
