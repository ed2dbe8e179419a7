"""The plan-driven forward: equal to timm's when nothing is dropped, token counts, class token, deltas."""

import math

import torch
from torch import nn

from thesis.alast.vit import ForwardRecord, SelectiveViT, StepPlan, keep_top_tokens


def test_full_plan_gives_timm_logits(vit, images):
    vit.eval()
    torch.testing.assert_close(SelectiveViT(vit)(images), vit(images), atol=1e-5, rtol=1e-5)


def test_token_counts_follow_the_budgets_and_compound(vit, images):
    record = ForwardRecord()
    SelectiveViT(vit)(images, StepPlan((True,) * 3, (0.5, 1.0, 0.3)), record)
    assert record.tokens_in == [17, 9, 9]       # 16 patches + class token
    assert record.tokens_out == [9, 9, 1 + math.ceil(0.3 * 8)]


def test_keep_reference_original_counts_against_the_image(vit, images):
    record = ForwardRecord()
    SelectiveViT(vit, keep_reference="original")(images, StepPlan((True,) * 3, (0.5, 0.75, 0.25)), record)
    assert record.tokens_out == [9, 9, 5]         # 8 of 16, min(8, 12), 4 of 16


def test_kept_tokens_are_the_most_attended_and_the_class_token_stays():
    x = torch.arange(5.0).view(1, 5, 1).expand(1, 5, 2)
    scores = torch.tensor([[0.1, 0.9, 0.2, 0.8]])
    kept = keep_top_tokens(x, scores, 2, num_prefix=1)
    assert kept[0, :, 0].tolist() == [0.0, 2.0, 4.0]  # class token, then patches 1 and 3 in order


def test_blocks_below_the_lowest_trainable_run_without_autograd(vit, images):
    vit.requires_grad_(False)
    vit.blocks[1].requires_grad_(True)
    record = ForwardRecord()
    out = SelectiveViT(vit)(images, StepPlan((False, True, False), (1.0,) * 3), record)
    assert record.input_grad == [False, False, True] and record.head_input_grad and out.requires_grad


class AddToClass(nn.Module):
    """A stand-in block adding a fixed vector to the class token only."""

    def __init__(self, shift):
        super().__init__()
        self.shift = shift

    def forward(self, x):
        return torch.cat([x[:, :1] + self.shift, x[:, 1:]], dim=1)


def test_class_token_delta_is_the_squared_update_norm(vit, images, monkeypatch):
    shifts = [torch.tensor([3.0, 4.0] + [0.0] * 14), torch.zeros(16), torch.ones(16)]
    vit.blocks = nn.ModuleList([AddToClass(s) for s in shifts])
    monkeypatch.setattr("thesis.alast.vit.run_block", lambda block, x, *args: block(x))
    record = ForwardRecord()
    SelectiveViT(vit)(images, None, record)
    torch.testing.assert_close(record.delta, torch.tensor([25.0, 0.0, 16.0]))
