"""The miniature's network and its three training objectives (spec B.7).

One transformers Llama (pre-norm, RoPE, RMSNorm, SwiGLU, `sdpa` attention so that
`thesis.sinks.capture.SinkCapture` sees every attention call), run in one of three modes:

- `llada`: bidirectional; masked diffusion, t ~ U(t_min, 1), each response token masked with
  probability t (the prompt never), loss = (1/t) * CE on the masked response tokens, summed per
  sequence and divided by the response length (LLaDA's SFT objective);
- `dream`: the same with Dream's shift, the masked token at position i predicted from the logits at
  i - 1 (as `thesis.sinks.decoding.diffusion_generate(shift=True)` reads them); initialised from the
  `arm` checkpoint;
- `arm`: causal, next-token CE on the response tokens (the LLaMA stand-in).

Bidirectional attention comes from `thesis.sinks.models.hf_logits_fn` (an all-True 4D mask), the same
function the decoders use, so training and decoding run the network identically.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from thesis.core.errors import ConfigError
from thesis.sinks.decoding import LogitsFn
from thesis.sinks.mini.corpus import BOS, EOS, MASK, PAD, VOCAB
from thesis.sinks.models import hf_logits_fn

MODES = ("llada", "dream", "arm")


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"training mode {mode!r} is unknown: use one of {', '.join(MODES)}")


def build_model(shape: DictConfig, seq_length: int, seed: int):
    """A random-init LlamaForCausalLM over the corpus vocabulary (weights drawn from `seed`)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if shape.hidden % shape.heads:
        raise ConfigError(f"model.shape.hidden={shape.hidden} is not a multiple of heads={shape.heads}: change one")
    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=shape.hidden, intermediate_size=shape.ffn_mult * shape.hidden,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.heads, max_position_embeddings=seq_length,
                         bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=False,
                         attn_implementation="sdpa")
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def logits_fn(model, mode: str) -> LogitsFn:
    check_mode(mode)
    return hf_logits_fn(model, bidirectional=mode != "arm")


def mask_response(x0: torch.Tensor, prompt_length: int, t: torch.Tensor,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward process: each response token of x0 (B, S) becomes MASK with probability t[b];
    returns the noisy ids and the boolean mask of replaced positions."""
    draws = torch.rand(x0.shape, generator=generator, device=x0.device)
    masked = draws < t[:, None]
    masked[:, :prompt_length] = False
    return x0.masked_fill(masked, MASK), masked


def shift_logits(logits: torch.Tensor) -> torch.Tensor:
    """Position i takes the logits of position i - 1 (Dream's shift; position 0 keeps its own)."""
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def diffusion_loss(logits: torch.Tensor, x0: torch.Tensor, masked: torch.Tensor, t: torch.Tensor,
                   prompt_length: int, shift: bool) -> torch.Tensor:
    """Mean over sequences of sum_{masked i} CE(x0_i) / t / response length."""
    if shift:
        logits = shift_logits(logits)
    ce = F.cross_entropy(logits.float().transpose(1, 2), x0, reduction="none")
    per_sequence = (ce * masked).sum(dim=1) / t / (x0.shape[1] - prompt_length)
    return per_sequence.mean()


def next_token_loss(logits: torch.Tensor, x0: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """Mean CE of the response tokens x0[:, P:] predicted from the logits one position earlier."""
    predicted = logits[:, prompt_length - 1:-1].float()
    return F.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), x0[:, prompt_length:].reshape(-1))


def training_loss(model, mode: str, x0: torch.Tensor, prompt_length: int, t_min: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One batch's loss under `mode` (see the module docstring)."""
    check_mode(mode)
    if mode == "arm":
        return next_token_loss(logits_fn(model, mode)(x0), x0, prompt_length)
    t = t_min + (1 - t_min) * torch.rand(x0.shape[0], generator=generator, device=x0.device)
    noisy, masked = mask_response(x0, prompt_length, t, generator)
    return diffusion_loss(logits_fn(model, mode)(noisy), x0, masked, t, prompt_length, shift=mode == "dream")
