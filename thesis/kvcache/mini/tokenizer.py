"""Byte-level tokenizer of the miniature (spec F.b): the 256 byte values plus BOS, EOS and PAD.

Every encoded sequence starts with BOS (256): a constant first token lets an attention sink form,
which KNorm and Expected Attention exploit. The call interface mirrors the few parts of a Hugging
Face tokenizer the Chapter 4 tasks use (`tokenizer(text, add_special_tokens=..., return_tensors=...)
.input_ids`, `decode(..., skip_special_tokens=...)`, `eos_token_id`), so the same answering code
serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

BOS, EOS, PAD = 256, 257, 258
VOCAB_SIZE = 259


@dataclass(frozen=True)
class ByteTokenizer:
    bos_token_id: int = BOS
    eos_token_id: int = EOS
    pad_token_id: int = PAD
    vocab_size: int = VOCAB_SIZE

    def encode(self, text: str | bytes, add_special_tokens: bool = True) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return ([BOS] if add_special_tokens else []) + list(data)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if not skip_special_tokens and any(i > 255 for i in ids):
            names = {BOS: "<bos>", EOS: "<eos>", PAD: "<pad>"}
            return "".join(names[i] if i > 255 else bytes([i]).decode("latin-1") for i in ids)
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def __call__(self, text: str | bytes, add_special_tokens: bool = True, return_tensors: str | None = None):
        ids = self.encode(text, add_special_tokens)
        return SimpleNamespace(input_ids=torch.tensor([ids]) if return_tensors == "pt" else ids)
