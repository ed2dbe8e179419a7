"""Training FLOPs as they ran: counted part by part on the meta device, checked against the counter
around the real step and against an independent analytic count (1 multiply-add = 1 FLOP)."""

import math

import pytest

from thesis.alast.costs import StepFlops
from thesis.alast.vit import ForwardRecord, SelectiveViT, StepPlan
from thesis.core.flops import FlopCounter

D, PATCH, CLASSES, BATCH = 16, 4, 4, 4


def set_trainable(vit, plan, train_norm=True):
    vit.requires_grad_(False)
    for block, trainable in zip(vit.blocks, plan.trainable):
        block.requires_grad_(trainable)
    for module in (vit.patch_embed,):
        module.requires_grad_(plan.train_stem)
    vit.cls_token.requires_grad_(plan.train_stem)
    vit.pos_embed.requires_grad_(plan.train_stem)
    vit.norm.requires_grad_(train_norm)
    vit.head.requires_grad_(True)


def real_step(model, images, plan):
    record = ForwardRecord()
    with FlopCounter(model) as counter:
        model(images, plan, record).sum().backward()
    return counter.report.total, record


def analytic(tokens_in, tokens_out, plan, train_norm=True):
    """Per sample: forward MACs of each part; backward: a linear layer costs its forward again for the
    input gradient and again for the weight gradient, an attention product (both factors depend on
    the input) twice its forward; nothing below the lowest trainable block. The
    patch embedding counts its forward only: the core counter has no rule for a convolution's backward."""
    patches = tokens_in[0] - 1
    total = patches * 3 * PATCH * PATCH * D
    input_grad = plan.train_stem
    for n_in, n_out, trainable in zip(tokens_in, tokens_out, plan.trainable):
        linear, attention = 4 * n_in * D * D + 8 * n_out * D * D, 2 * n_in * n_in * D
        backward = (linear + 2 * attention) * (trainable or input_grad) + linear * trainable
        total += linear + attention + backward
        input_grad = input_grad or trainable
    head = D * CLASSES
    return BATCH * (total + head * (2 + (input_grad or train_norm)))


@pytest.mark.parametrize("plan", [
    StepPlan((True, True, True), (1.0, 1.0, 1.0), train_stem=True),       # FT full
    StepPlan((False, False, False), (1.0, 1.0, 1.0)),                     # FT head
    StepPlan((False, True, False), (0.5, 1.0, 0.25)),                     # ALaST-like: frozen prefix, drops
    StepPlan((True, False, True), (0.75, 0.5, 1.0)),
])
def test_step_flops_equal_the_real_step_and_the_analytic_count(vit, images, plan):
    model = SelectiveViT(vit)
    set_trainable(vit, plan)
    counted, record = real_step(model, images, plan)
    assert StepFlops(model).step(tuple(images.shape), record) == counted
    assert counted == analytic(record.tokens_in, record.tokens_out, plan)


def test_dropping_tokens_saves_the_expected_flops(vit, images):
    """Keeping half of the patches after block 0's attention: block 0's MLP and blocks 1-2 shrink."""
    model = SelectiveViT(vit)
    full_plan = StepPlan((True,) * 3, (1.0,) * 3, train_stem=True)
    drop_plan = StepPlan((True,) * 3, (0.5, 1.0, 1.0), train_stem=True)
    set_trainable(vit, full_plan)
    full, _ = real_step(model, images, full_plan)
    dropped, record = real_step(model, images, drop_plan)
    n, k = 17, 1 + math.ceil(0.5 * 16)
    saved_forward = 8 * (n - k) * D * D + 2 * (4 * (n - k) * D * D + 2 * (n * n - k * k) * D + 8 * (n - k) * D * D)
    assert record.tokens_out == [k, k, k]
    assert full - dropped == 3 * BATCH * saved_forward  # forward + input + weight gradients


def test_cache_counts_each_shape_once(vit, images):
    model = SelectiveViT(vit)
    plan = StepPlan((True,) * 3, (1.0,) * 3)
    set_trainable(vit, plan)
    _, record = real_step(model, images, plan)
    counter = StepFlops(model)
    first = counter.step(tuple(images.shape), record)
    size = len(counter.cache)
    assert counter.step(tuple(images.shape), record) == first and len(counter.cache) == size
