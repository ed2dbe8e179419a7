import pytest
import torch
from torch import nn

from thesis.condcomp import DepthSkip, InputSparse, WidthSparse, mask_rows


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_mask_rows_rows_are_zero_or_unchanged():
    s = torch.randn(3, 7, 5)
    m = torch.rand(3, 7) > 0.5
    out = mask_rows(s, m)
    assert out.shape == s.shape
    assert torch.equal(out[m], s[m])
    assert torch.all(out[~m] == 0)


def test_mask_rows_passes_gradient_to_float_mask():
    s = torch.randn(2, 4, 3)
    m = torch.ones(2, 4, requires_grad=True)
    mask_rows(s, m).sum().backward()
    assert torch.allclose(m.grad, s.sum(-1))


def _topk_selector(k: int):
    def select(x: torch.Tensor) -> torch.Tensor:
        idx = x.norm(dim=-1).topk(k, dim=-1).indices
        return torch.zeros(x.shape[:2], dtype=torch.bool).scatter(1, idx, True)
    return select


@pytest.mark.parametrize("ragged", [False, True])
def test_input_sparse_gathered_equals_masked_on_kept_rows(ragged):
    f = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
    x = torch.randn(4, 10, 6)
    if ragged:
        masks = torch.rand(4, 10) > 0.4
        selector = lambda _: masks  # noqa: E731
    else:
        selector = _topk_selector(3)
    y_masked, rec = InputSparse(f, selector, "masked")(x)
    y_gathered, rec_g = InputSparse(f, selector, "gathered")(x)
    keep = selector(x)
    assert y_masked.shape == y_gathered.shape == (4, 10, 4)
    assert torch.allclose(y_masked[keep], y_gathered[keep], atol=1e-6)
    assert torch.allclose(y_masked[keep], f(x)[keep], atol=1e-6)
    assert torch.all(y_gathered[~keep] == 0) and torch.all(y_masked[~keep] == 0)
    assert torch.equal(rec.fraction, keep.float()) and torch.equal(rec_g.fraction, keep.float())


def _blocks(m: int, d: int = 5, out: int = 3) -> list[nn.Module]:
    return [nn.Linear(d, out) for _ in range(m)]


@pytest.mark.parametrize("aggregator", ["concat", "concat_proj", "sum"])
def test_width_sparse_all_ones_mask_is_dense(aggregator):
    m = 4
    proj = nn.Linear(3 * m, 7) if aggregator == "concat_proj" else None
    layer = WidthSparse(_blocks(m), aggregator, lambda xc: torch.ones(xc.shape[0], m), proj)
    x = torch.randn(6, 5)
    y, rec = layer(x)
    assert torch.allclose(y, layer.dense(x))
    assert torch.all(rec.fraction == 1)
    if aggregator == "sum":
        assert torch.allclose(y, sum(b(x) for b in layer.blocks))


def test_width_sparse_concat_zeroes_unselected_blocks_per_token():
    m = 3
    mask = torch.tensor([[1.0, 0.0, 1.0]]).expand(2, 4, m)  # per-token decisions on (B, N, d) input
    layer = WidthSparse(_blocks(m), "concat", lambda _: mask)
    x = torch.randn(2, 4, 5)
    y, rec = layer(x)
    assert y.shape == (2, 4, 9)
    assert torch.all(y[..., 3:6] == 0)
    assert torch.allclose(y[..., :3], layer.blocks[0](x))
    assert rec.unit == "token" and torch.allclose(rec.fraction, torch.full((2, 4), 2 / 3))


@pytest.mark.parametrize("training", [True, False])
def test_depth_skip_limits_and_mixture(training):
    f = nn.Linear(4, 4)
    x = torch.randn(5, 4)
    sigma = torch.tensor([0.0, 1.0, 0.25, 0.0, 1.0])
    layer = DepthSkip(f, lambda _: sigma).train(training)
    y, rec = layer(x)
    fx = f(x)
    assert torch.allclose(y[sigma == 0], x[sigma == 0])
    assert torch.allclose(y[sigma == 1], fx[sigma == 1])
    assert torch.allclose(y[2], 0.25 * fx[2] + 0.75 * x[2])
    assert torch.equal(rec.fraction, (sigma != 0).float())


def test_depth_skip_gradient_reaches_gate():
    f = nn.Linear(3, 3)
    x = torch.randn(2, 3)
    sigma = torch.zeros(2, requires_grad=True)
    y, _ = DepthSkip(f, lambda _: sigma)(x)
    y.sum().backward()
    assert torch.allclose(sigma.grad, (f(x) - x).sum(-1).detach())
