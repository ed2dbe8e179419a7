"""The miniature's model: a transformers `LlamaForCausalLM` of one of the kvmini sizes (spec F.b).

Built from `model.config` (LlamaConfig keyword arguments; vocabulary, special ids and RoPE base are
fixed here: 259 byte tokens, theta 10000, no dropout), trained by `train.py`, saved with
`save_pretrained` and read back by the evaluations with `from_pretrained`, as the paper scale
loads hub checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from thesis.core.errors import CheckpointError
from thesis.kvcache.mini.tokenizer import BOS, EOS, PAD, VOCAB_SIZE


def llama_config(shape: Mapping[str, Any]) -> LlamaConfig:
    return LlamaConfig(vocab_size=VOCAB_SIZE, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                       rope_theta=10000.0, attention_dropout=0.0, hidden_act="silu", **dict(shape))


def build_model(shape: Mapping[str, Any], seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(shape))


def load_model(folder: str | Path, device: torch.device, attn_implementation: str = "sdpa") -> LlamaForCausalLM:
    """The trained model in float32 (the evaluations compare scores, bf16 ties them)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"no kvmini checkpoint in {folder}: train it first (the kv_mini run does) "
                              "or point the run at the folder that save_pretrained wrote")
    model = LlamaForCausalLM.from_pretrained(str(folder), attn_implementation=attn_implementation,
                                             dtype=torch.float32)
    return model.to(device).eval()


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
