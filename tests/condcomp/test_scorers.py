import torch

from thesis.condcomp import PooledDotScorer, gumbel_softmax


def test_pooled_dot_scorer_shape_and_sum_pooling():
    torch.manual_seed(0)
    scorer = PooledDotScorer(d=8, n=5)
    x = torch.randn(3, 4, 6, 8)  # (B, h, w, d)
    scores = scorer(x)
    assert scores.shape == (3, 5)
    pooled = x.sum(dim=(1, 2))
    expected = scorer.mlp(pooled) @ scorer.element_embeddings.T  # eqs. 2.9-2.10
    assert torch.allclose(scores, expected, atol=1e-5)
    assert torch.allclose(scorer(x.reshape(3, 24, 8)), scores, atol=1e-5)  # token layout, same set


def test_pooled_dot_scorer_trains_through_gumbel_softmax():
    torch.manual_seed(0)
    scorer = PooledDotScorer(d=4, n=3)
    s = gumbel_softmax(scorer(torch.randn(2, 5, 4)), tau=0.5, hard=True)
    (s * torch.arange(3.0)).sum().backward()
    assert scorer.element_embeddings.grad.abs().sum() > 0
