"""FastGen-lite (thesis Fig. 4.6): the protected ids read from a tokenizer, the kept set of a prefill
compression against a hand computation, the kept set after repeated cuts of KNorm's LM schedule
against a replay of the rule, and the refusal when no input ids were recorded."""

import math
from contextlib import nullcontext

import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import DynamicCache, PreTrainedTokenizerFast

from thesis.core.models import with_cache
from thesis.kvcache.decoding import DecodingPress
from thesis.kvcache.fastgen import FastGenLitePress, protected_token_ids
from thesis.kvcache.knorm import PruneAfterPress
from thesis.kvcache.press import gather_positions

SPECIAL, COMMA, PERIOD = 1, 5, 6


def run(model, ids, press=None):
    cache = DynamicCache(config=model.config)
    with torch.no_grad(), press(model) if press is not None else nullcontext():
        model(input_ids=ids, **with_cache(model, cache))
    return cache


def test_protected_ids_are_special_tokens_and_single_punctuation():
    vocab = {"<s>": 0, ".": 1, ",": 2, "a": 3, "ab": 4, "..": 5, "Ġ.": 6, "(": 7, "</s>": 8}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="a")),
                                        bos_token="<s>", eos_token="</s>")
    special, punctuation = protected_token_ids(tokenizer)
    assert special == (0, 8) and punctuation == (1, 2, 7)


@pytest.mark.parametrize("ratio, expected", [
    # scores: position 0 special (2), 3 and 7 punctuation (1 + 3/12, 1 + 7/12), others slot/12
    (0.5, [0, 3, 7, 9, 10, 11]),
    (0.75, [0, 3, 7]),
    (0.9, [0]),
    (0.25, [0, 3, 5, 6, 7, 8, 9, 10, 11]),
])
def test_prefill_keeps_special_then_punctuation_then_recent(ratio, expected, tiny_llama):
    ids = torch.tensor([[SPECIAL, 10, 11, COMMA, 12, 13, 14, PERIOD, 15, 16, 17, 18]])
    press = FastGenLitePress(compression_ratio=ratio, special_ids=(SPECIAL,), punctuation_ids=(COMMA, PERIOD))
    full, pressed = run(tiny_llama, ids), run(tiny_llama, ids, press)
    kept = torch.tensor(expected).expand(1, 2, -1)
    for reference, layer in zip(full.layers, pressed.layers):
        assert torch.allclose(layer.keys, gather_positions(reference.keys, kept), atol=1e-6)
        assert torch.allclose(layer.values, gather_positions(reference.values, kept), atol=1e-6)


def test_streaming_cuts_replay_the_rule(tiny_llama, prompt):
    """Layer 0 is not pruned, so layer 1's keys are the uncompressed run's and every cut can be replayed."""
    ids, prune_after, keep_ratio = prompt[:, :60], 16, 0.75
    special, punctuation = (int(ids[0, 0]), int(ids[0, 20])), tuple(int(i) for i in ids[0, 30:36])
    reference = run(tiny_llama, ids).layers[1].keys
    press = PruneAfterPress(FastGenLitePress(special_ids=special, punctuation_ids=punctuation),
                            prune_after=prune_after, keep_ratio=keep_ratio, skip_layers=(0,))
    cache = DynamicCache(config=tiny_llama.config)
    with torch.no_grad(), press(tiny_llama):
        tiny_llama(input_ids=ids[:, :4], **with_cache(tiny_llama, cache))
        for position in range(4, ids.shape[1]):
            tiny_llama(input_ids=ids[:, position:position + 1], **with_cache(tiny_llama, cache))
    slots = list(range(4))
    for position in range(4, ids.shape[1]):
        slots.append(position)
        if len(slots) >= prune_after:
            def priority(slot_index: int) -> float:
                token = int(ids[0, slots[slot_index]])
                tier = 2 if token in special else 1 if token in punctuation else 0
                return tier + slot_index / len(slots)
            best = sorted(range(len(slots)), key=priority, reverse=True)[:math.ceil(keep_ratio * len(slots))]
            slots = [slots[i] for i in sorted(best)]
    assert cache.layers[1].get_seq_length() == len(slots)
    kept = torch.tensor(slots).expand(1, 2, -1)
    assert torch.allclose(cache.layers[1].keys, gather_positions(reference, kept), atol=1e-5)
    assert cache.layers[0].get_seq_length() == ids.shape[1]


def test_without_recorded_ids_scoring_is_refused(tiny_llama, prompt):
    press = DecodingPress(FastGenLitePress(special_ids=(SPECIAL,), punctuation_ids=(COMMA,)), compression_interval=1,
                          target_size=8, hidden_states_buffer_size=4, compress_prefill=True)
    with pytest.raises(ValueError, match="saw no input ids"):
        run(tiny_llama, prompt[:, :16], press)
