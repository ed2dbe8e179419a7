"""The key-masked batched forward computes what physically removing the dropped tokens computes."""

import torch

from thesis.semcom.model import SemanticViT


def gathered_forward(model: SemanticViT, image: torch.Tensor, alpha: float) -> tuple[torch.Tensor, int]:
    """Independent batch-1 forward that removes dropped tokens from the sequence (no link)."""
    vit, n = model.vit, model.num_patches
    x = model.embed(image, torch.tensor([alpha]))
    mask = torch.ones(n)
    alive = torch.arange(n + 2)                      # positions still in the sequence
    for l, block in enumerate(vit.blocks):
        if 1 <= l < model.split:
            patches = x[0, 1:-1]
            gates = torch.sigmoid(model.selectors[l - 1].gate(patches)).squeeze(-1)
            thr = torch.sigmoid(model.selectors[l - 1].threshold(x[0, -1]))
            mask = torch.relu(gates - thr) * mask[alive[1:-1] - 1]
            keep = mask > model.delta
            alive = torch.cat([alive[:1], alive[1:-1][keep], alive[-1:]])
            mask_full = torch.cat([torch.ones(1), mask[keep], torch.ones(1)])
            x = x[:, torch.cat([torch.tensor([True]), keep, torch.tensor([True])])]
            x = block(x * mask_full[None, :, None]) * mask_full[None, :, None]
            full = torch.zeros(n)
            full[alive[1:-1] - 1] = mask[keep]
            mask = full
        else:
            x = block(x)
    return vit.forward_head(vit.norm(x)), len(alive) - 2


def test_masked_equals_removed(semantic):
    images = torch.randn(4, 3, 16, 16)
    for alpha in (0.2, 0.7):
        logits, trace = semantic(images, alpha)
        for i in range(len(images)):
            ref, kept = gathered_forward(semantic, images[i:i + 1], alpha)
            assert kept == int(trace.kept_patches[i])
            assert torch.allclose(logits[i], ref[0], atol=1e-4)
    assert (trace.kept_patches < semantic.num_patches).any()     # the fixture really drops tokens


def test_compacted_server_pass_is_unchanged(semantic):
    from thesis.semcom.model import compact

    images = torch.randn(4, 3, 16, 16)
    x, keep, _, _, _ = semantic.encode(images, 0.3, hard=True)
    short_x, short_keep = compact(x, keep)
    assert short_x.shape[1] == int(keep.sum(-1).max()) < x.shape[1]
    assert torch.equal(short_keep.sum(-1), keep.sum(-1))
    full, _, _ = semantic.decode(x, keep, None, None, hard=True)
    short, _, _ = semantic.decode(short_x, short_keep, None, None, hard=True)
    assert torch.allclose(full, short, atol=1e-5)
