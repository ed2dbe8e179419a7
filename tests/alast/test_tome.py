"""ToMe (token merging baseline): matching, size-weighted merging, proportional attention, and how
merged sequences run through `SelectiveViT` and are priced by `StepFlops`."""

import pytest
import torch

from thesis.alast.costs import StepFlops
from thesis.alast.module import FineTuneModule
from thesis.alast.schedules import StaticSchedule
from thesis.alast.tome import (TokenSizes, bipartite_soft_matching, merge, merge_tokens,
                               proportional_attention)
from thesis.alast.vit import ForwardRecord, SelectiveViT, StepPlan, attention_weights, run_block
from thesis.core.flops import FlopCounter

B, N, C = 2, 9, 8


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def keys_of(x, heads=2):
    """(B, N, C) tokens as (B, heads, N, C) keys: every head sees the token itself."""
    return x.unsqueeze(1).expand(-1, heads, -1, -1)


def test_merging_r_tokens_leaves_n_minus_r_and_the_class_token_untouched():
    x = randn(B, N, C)
    sizes = TokenSizes()
    out = merge(x, keys_of(x), sizes, r=3, num_prefix=1)
    assert out.shape == (B, N - 3, C) and sizes.size.shape == (B, N - 3, 1)
    torch.testing.assert_close(out[:, 0], x[:, 0], rtol=0, atol=0)
    assert torch.all(sizes.size[:, 0] == 1)
    assert torch.all(sizes.size.sum(dim=1) == N)  # merging conserves the number of input tokens


def test_class_token_is_never_matched_even_when_it_is_the_closest():
    x = randn(1, N, C)
    x[:, 0] = x[:, 1]  # class token identical to the first B token
    src, dst = bipartite_soft_matching(keys_of(x), r=4, num_prefix=1)
    assert 0 not in src.tolist()[0] and 0 not in dst.tolist()[0]
    assert all(s % 2 == 0 for s in src.tolist()[0]) and all(d % 2 == 1 for d in dst.tolist()[0])  # A -> B


def test_two_identical_tokens_of_size_one_merge_into_that_token_with_size_two():
    x = randn(1, N, C)
    x[:, 4] = x[:, 7]  # position 4 is in A, 7 in B; cosine similarity 1, the best link
    sizes = TokenSizes()
    out = merge(x, keys_of(x), sizes, r=1, num_prefix=1)
    survivors = [p for p in range(N) if p != 4]
    torch.testing.assert_close(out, x[:, survivors])
    assert sizes.size[0, survivors.index(7), 0] == 2
    assert sizes.size.sum() == N


def test_size_weighted_average_matches_an_independent_computation():
    x, size = randn(1, 7, C), torch.tensor([1.0, 2.0, 3.0, 1.0, 4.0, 2.0, 5.0]).view(1, 7, 1)
    src, dst = torch.tensor([[2, 4]]), torch.tensor([[5, 5]])  # two A tokens fold into the same B token
    out, out_size = merge_tokens(x, size, src, dst)
    s = size[0, :, 0].tolist()
    expected = (s[2] * x[0, 2] + s[4] * x[0, 4] + s[5] * x[0, 5]) / (s[2] + s[4] + s[5])
    torch.testing.assert_close(out[0, 3], expected)  # survivors 0, 1, 3, 5, 6: position 5 is 4th
    torch.testing.assert_close(out[0, [0, 1, 2, 4]], x[0, [0, 1, 3, 6]])
    assert out_size[0, :, 0].tolist() == [1.0, 2.0, 1.0, 9.0, 5.0]


def test_proportional_attention_with_unit_sizes_is_plain_attention():
    q, k = randn(B, 2, N, C, seed=1), randn(B, 2, N, C, seed=2)
    plain = torch.softmax(q @ k.transpose(-2, -1) * C ** -0.5, dim=-1)
    torch.testing.assert_close(proportional_attention(q, k, C ** -0.5, torch.ones(B, N, 1)), plain)
    torch.testing.assert_close(proportional_attention(q, k, C ** -0.5, None), plain)


def test_attention_weights_with_unit_sizes_equal_the_plain_path(vit):
    x = randn(B, N, vit.embed_dim)
    attn = vit.blocks[0].attn
    plain, _ = attention_weights(attn, x)
    sized, _ = attention_weights(attn, x, torch.ones(B, N, 1))
    torch.testing.assert_close(sized, plain)


@torch.no_grad()
def test_a_merged_identical_pair_with_proportional_attention_leaves_the_other_tokens_unchanged(vit):
    """ToMe's invariance: s identical tokens merged into one of size s attract the same attention,
    so every other token's block output is the same as with the unmerged sequence."""
    vit.eval()
    block = vit.blocks[0]
    x = randn(1, N, vit.embed_dim)
    x[:, 6] = x[:, 3]
    full = run_block(block, x, N, 1)
    kept = [p for p in range(N) if p != 6]
    size = torch.ones(1, N - 1, 1)
    size[0, kept.index(3)] = 2.0
    merged = run_block(block, x[:, kept], N, 1, "after_attn", TokenSizes(size))
    torch.testing.assert_close(merged, full[:, kept])
    without = run_block(block, x[:, kept], N, 1, "after_attn", TokenSizes(size, proportional=False))
    assert not torch.allclose(without, full[:, kept])  # plain attention under-weights the merged token


def test_selective_vit_merges_r_per_block_and_keeps_the_class_token_first(vit, images):
    record = ForwardRecord()
    logits = SelectiveViT(vit)(images, StepPlan((True,) * 3, (1.0,) * 3, True, merge=(3, 2, 4)), record)
    assert record.tokens_in == [17, 14, 12] and record.tokens_out == [14, 12, 8]
    assert record.merged == [3, 2, 4] and record.sized == [False, True, True]
    assert logits.shape == (4, 4)


def test_merge_count_is_capped_at_half_of_the_patch_tokens(vit, images):
    record = ForwardRecord()
    SelectiveViT(vit)(images, StepPlan((True,) * 3, (1.0,) * 3, True, merge=(16, 16, 16)), record)
    assert record.tokens_out == [9, 5, 3] and record.merged == [8, 4, 2]


def test_a_block_cannot_both_merge_and_drop():
    with pytest.raises(ValueError, match="both merge and drop"):
        StepPlan((True,) * 3, (1.0, 0.5, 1.0), merge=(2, 2, 2))


def test_dropping_after_merging_keeps_sizes_with_their_tokens(vit, images):
    record = ForwardRecord()
    out = SelectiveViT(vit)(images, StepPlan((True,) * 3, (1.0, 0.5, 1.0), merge=(4, 0, 0)), record)
    assert record.tokens_out == [13, 7, 7] and out.isfinite().all()


@pytest.mark.parametrize("merge_r", [(2, 2, 2), (4, 0, 3)])
def test_step_flops_of_merged_steps_equal_the_real_step_and_fall_with_r(vit, images, merge_r):
    model = SelectiveViT(vit)
    vit.requires_grad_(True)
    counts = {}
    for r in ((), merge_r):
        record = ForwardRecord()
        with FlopCounter(model) as counter:
            model(images, StepPlan((True,) * 3, (1.0,) * 3, True, merge=r), record).sum().backward()
        counts[r] = StepFlops(model).step(tuple(images.shape), record)
        assert counts[r] == counter.report.total
    assert counts[merge_r] < counts[()]


def test_tome_schedule_merges_in_training_and_by_default_at_evaluation():
    schedule = StaticSchedule(blocks="all", train_stem=True, merge=5)
    schedule.setup(3)
    schedule.bind(None, None)  # "all" needs neither model nor images
    assert schedule.plan().merge == (5, 5, 5) and all(schedule.plan().trainable)
    assert schedule.eval_plan().merge == (5, 5, 5)
    full_eval = StaticSchedule(blocks="all", merge=5, merge_at_eval=False)
    full_eval.setup(3)
    assert full_eval.eval_plan() is None
    plain = StaticSchedule(blocks="all")
    plain.setup(3)
    assert plain.plan().merge == () and plain.eval_plan() is None
    with pytest.raises(ValueError, match="2 counts for a model of 3 blocks"):
        StaticSchedule(merge=[1, 2]).setup(3)


def test_evaluation_of_a_tome_module_runs_the_merged_model(vit, images, monkeypatch):
    module = FineTuneModule(vit, StaticSchedule(blocks="all", train_stem=True, merge=4))
    seen = []
    forward = SelectiveViT.forward

    def spy(self, images, plan=None, record=None):
        seen.append(plan)
        return forward(self, images, plan, record)

    monkeypatch.setattr(SelectiveViT, "forward", spy)
    monkeypatch.setattr(FineTuneModule, "log", lambda *args, **kwargs: None)
    module._evaluate((images, torch.zeros(4, dtype=torch.long)), "val")
    assert seen[-1].merge == (4, 4, 4)


def test_merging_passes_gradients_to_every_block(vit, images):
    vit.requires_grad_(True)
    SelectiveViT(vit)(images, StepPlan((True,) * 3, (1.0,) * 3, True, merge=(3, 3, 3))).sum().backward()
    for block in vit.blocks:
        assert block.attn.qkv.weight.grad.abs().sum() > 0 and block.mlp.fc2.weight.grad.abs().sum() > 0
