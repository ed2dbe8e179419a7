"""Accounting: symbols and rho of a transmitted packet, capacity bits, JPEG bits, block FLOPs."""

import os

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import Block
from torch.utils.flop_counter import FlopCounterMode

from thesis.semcom.channel import symbols_per_token
from thesis.semcom.digital import jpeg_roundtrip, resize_side
from thesis.semcom.packet import block_flops, capacity_bits, compression_factor, packet_symbols, sent_symbols


def test_counted_symbols_match_the_packet_on_the_air(semantic):
    images = torch.randn(5, 3, 16, 16)
    for ratio in (0.25, 0.5):
        _, trace = semantic(images, 0.4, ratio, 10.0)
        counted = packet_symbols(trace.transmitted_tokens, ratio, semantic.dim)
        assert torch.equal(counted.long(), sent_symbols(trace.packet))           # independent count
        expected = (trace.kept_patches + 2) * symbols_per_token(ratio, semantic.dim)
        assert torch.equal(counted, expected)
    assert (trace.kept_patches < semantic.num_patches).any()


def test_rho_worked_example_deit_tiny():
    # alpha = 1: 196 patches + class + budget tokens, r = 0.5 -> 96 symbols each; p = 3 * 224 * 224
    q = packet_symbols(torch.tensor([198.0]), 0.5, 192)
    assert compression_factor(q, 3 * 224 * 224).item() == pytest.approx(0.1263, abs=1e-4)


def test_capacity_bits_worked_example():
    q = 0.01 * 3 * 224 * 224                                   # rho = 0.01
    bits = capacity_bits(q, 10.0)
    assert bits == pytest.approx(q * np.log2(11.0))
    assert bits == pytest.approx(5207, abs=1)
    assert int(resize_side(bits, 224)) == 14                   # 24 * 14^2 = 4704 <= 5207 < 24 * 15^2
    assert int(resize_side(20.0, 224)) == 0


def test_jpeg_bits_are_the_file_size(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3)).astype(np.uint8)
    _, bits = jpeg_roundtrip(pixels, 50)
    for k, p in enumerate(pixels):
        path = tmp_path / f"{k}.jpg"
        Image.fromarray(p).save(path, format="JPEG", quality=50)
        assert bits[k] == 8 * os.path.getsize(path)


def test_block_flops_match_torch_counter():
    block = Block(dim=32, num_heads=2, mlp_ratio=4.0)
    block.attn.fused_attn = False          # explicit q k^T and attn @ v, which the counter sees
    x = torch.randn(1, 11, 32)
    with FlopCounterMode(display=False) as counter:
        block(x)
    # torch counts 2 FLOPs per multiply-add; the project counts 1
    assert block_flops(11, 32, 4.0) == pytest.approx(counter.get_total_flops() / 2, rel=0.01)
