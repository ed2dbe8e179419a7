"""SinkCapture: masked keys get zero attention and the rest renormalise; topk 0 changes nothing;
what is kept grows with steps x layers x heads x k, not with S x S."""

import torch
import torch.nn.functional as F

from thesis.sinks.capture import SinkCapture, explicit_attention, sink_column_mask
from thesis.sinks.decoding import diffusion_generate

from .toy import ToyLM


def qkv(batch=1, heads=2, n=6, dim=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, dim, generator=generator) for _ in range(3)]


def test_masking_zeroes_masked_keys_and_renormalises_the_others():
    q, k, v = qkv()
    original = explicit_attention(q, k)
    positions = torch.tensor([[[2], [4]]])  # one key per head
    keep = sink_column_mask(positions, 6, 6)
    masked = explicit_attention(q, k, keep)
    for head, column in ((0, 2), (1, 4)):
        rows = [i for i in range(6) if i != column]
        assert torch.all(masked[0, head, rows, column] == 0)
        # a query keeps attending to itself, so its row is unchanged
        assert torch.allclose(masked[0, head, column], original[0, head, column])
        others = [j for j in range(6) if j != column]
        expected = original[0, head, rows][:, others]
        expected = expected / expected.sum(-1, keepdim=True)
        assert torch.allclose(masked[0, head, rows][:, others], expected, atol=1e-6)


def test_capture_output_uses_the_mask_and_records_the_masked_key():
    q, k, v = qkv()
    with SinkCapture(keep=3, topk=1) as capture:
        out = F.scaled_dot_product_attention(q, k, v)
    (record,) = capture.records
    assert record.masked.shape == (1, 2, 1)
    assert torch.equal(record.masked, record.positions[..., :1])
    keep = sink_column_mask(record.masked, 6, 6)
    assert torch.allclose(out, explicit_attention(q, k, keep) @ v, atol=1e-5)
    assert not out.isnan().any()


def test_causal_calls_mask_without_emptying_the_first_row():
    q, k, v = qkv()
    with SinkCapture(keep=2, topk=2) as capture:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert not out.isnan().any()
    assert capture.records[0].positions[0, 0, 0] == 0  # the first key receives most under a causal mask


def test_topk_zero_is_bitwise_the_plain_call():
    q, k, v = qkv()
    with SinkCapture(keep=3, topk=0):
        captured = F.scaled_dot_product_attention(q, k, v)
    assert torch.equal(captured, F.scaled_dot_product_attention(q, k, v))
    assert F.scaled_dot_product_attention is torch.nn.functional.scaled_dot_product_attention


def test_kept_numbers_do_not_grow_with_sequence_length():
    model = ToyLM(layers=2, heads=2)
    sizes = []
    for prompt_length in (4, 40):
        capture = SinkCapture(keep=3, topk=1)
        with capture:
            diffusion_generate(model, torch.ones(1, prompt_length, dtype=torch.long), mask_id=0, gen_length=8,
                               block_length=4, steps=8, on_step=lambda step, ids: capture.begin_step(step))
        assert len(capture.records) == 8 * 2  # steps x layers
        assert [(r.step, r.layer) for r in capture.records[:3]] == [(0, 0), (0, 1), (1, 0)]
        sizes.append(sum(r.numel() for r in capture.records))
    # per (step, layer, head): k positions, k scores, k flags, 1 count, topk masked positions
    assert sizes == [8 * 2 * 2 * (3 * 3 + 1 + 1)] * 2
