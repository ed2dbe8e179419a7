"""BOS key sparsity (thesis Figs. 4.8, 4.9): zeroing dims edits only the BOS key, random dims avoid the
peaked ones, and the two-step read (edit at `iteration`) without an edit equals one pass."""

import torch
from transformers import DynamicCache

from thesis.kvcache.analysis.capture import forward_layers
from thesis.kvcache.analysis.key_sparsity import (key_activations, peaked_dims, random_dims, read_with_edit,
                                                  zero_key_dims)
from thesis.kvcache.queries import pre_rope_keys


def test_zeroing_changes_only_the_given_dims_of_the_bos_key():
    keys = torch.randn(2, 3, 7, 8) + 5
    dims = torch.tensor([[0, 5], [2, 3], [7, 1]])
    edited = zero_key_dims(keys, 0, dims)
    changed = edited != keys
    assert not changed[:, :, 1:].any()
    for head, head_dims in enumerate(dims.tolist()):
        assert changed[:, head, 0].nonzero()[:, 1].unique().tolist() == sorted(head_dims)
        assert (edited[:, head, 0, head_dims] == 0).all()
    assert keys.min() > 0  # the input is left untouched


def test_random_dims_avoid_the_peaked_ones():
    bos_abs = torch.rand(2, 3, 16)
    peaked = peaked_dims(bos_abs, 3)
    assert torch.equal(peaked[..., 0], bos_abs.argmax(-1))
    drawn = random_dims(peaked, 16, torch.Generator().manual_seed(0))
    assert drawn.shape == peaked.shape
    for p, r in zip(peaked.reshape(-1, 3).tolist(), drawn.reshape(-1, 3).tolist()):
        assert not set(p) & set(r) and len(set(r)) == 3 and all(0 <= d < 16 for d in r)


def test_bos_key_is_the_same_in_every_chunk(tiny_llama, prompt):
    chunks = torch.stack([prompt[0, :20], prompt[0, 20:40]])
    chunks[:, 0] = 3
    acts = key_activations(tiny_llama, chunks)
    single = torch.stack([pre_rope_keys(layer.module, layer.hidden_states)[0, :, 0] for layer in forward_layers(tiny_llama, chunks[:1])])
    assert torch.allclose(acts["bos"], single, atol=1e-6)


def test_unedited_two_step_read_equals_one_pass(tiny_llama, prompt):
    chunk = prompt[0, :30]
    for layer, rest in zip(forward_layers(tiny_llama, chunk[None]), read_with_edit(tiny_llama, chunk, 5, None)):
        assert torch.allclose(rest.attention(), layer.attention(window=25), atol=1e-5)


def test_edit_reaches_later_layers_but_first_layer_keeps_other_keys(tiny_llama, prompt):
    chunk = prompt[0, :30]
    dims = torch.tensor([[0, 1, 2], [3, 4, 5]]).expand(2, 2, 3)
    plain = DynamicCache(config=tiny_llama.config)
    forward_layers(tiny_llama, chunk[None], plain)
    edited = [layer.keys for layer in read_with_edit(tiny_llama, chunk, 5, dims)]
    assert torch.equal(edited[0][:, :, 0], zero_key_dims(plain.layers[0].keys, 0, dims[0])[:, :, 0])
    assert torch.allclose(edited[0][:, :, 1:], plain.layers[0].keys[:, :, 1:], atol=1e-6)
    assert not torch.allclose(edited[1][:, :, 5:], plain.layers[1].keys[:, :, 5:], atol=1e-6)
    assert torch.allclose(edited[1][:, :, 1:5], plain.layers[1].keys[:, :, 1:5], atol=1e-6)
