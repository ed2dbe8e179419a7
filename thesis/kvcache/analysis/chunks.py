"""Text chunks for the analyses: fixed-length token windows cut from a plain-text or JSON Lines file.

The thesis averages Figs. 4.2 and 4.7 over 1024 Wikipedia chunks of 1024 tokens (4.1.12). The texts
are tokenized without special tokens, concatenated in file order and cut into consecutive windows of
`chunk_length - 1` tokens, each preceded by the tokenizer's BOS token, so position 0 of every chunk
is the BOS sink the KNorm analysis looks at (Figs. 4.8, 4.29). A `.txt` file is one text; a `.jsonl`
file holds one text per record in `text_field`. Only the beginning the chunks need is read: records
are parsed one at a time until enough tokens are collected, and a plain-text file is tokenized from
its start as the language-modelling task does (`tasks.perplexity.leading_tokens`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from thesis.core.errors import ConfigError, DataNotFoundError
from thesis.kvcache.tasks.perplexity import leading_tokens


def read_texts(path: Path, text_field: str, source: str) -> Iterator[str]:
    """The `text_field` of each record of the JSON Lines file `path`, read one line at a time."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if text_field not in record:
                raise DataNotFoundError(f"{path}:{number} lacks the field {text_field!r} ({source}); "
                                        f"set data.chunks.text_field to the field holding the text")
            yield str(record[text_field])


def text_stream(tokenizer, path: Path, needed: int, text_field: str, source: str) -> list[int]:
    """At least `needed` consecutive text tokens of `path` (all of them when it holds fewer)."""
    if not path.is_file():
        raise DataNotFoundError(f"{path} not found: write the text chunks there ({source})")
    if path.suffix != ".jsonl":
        return leading_tokens(tokenizer, path, needed)
    stream: list[int] = []
    for text in read_texts(path, text_field, source):
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(stream) >= needed:
            break
    return stream


def text_chunks(tokenizer, path: str | Path, n_chunks: int, chunk_length: int, text_field: str = "text",
                source: str = "") -> Tensor:
    """(chunks, chunk_length) token ids: BOS followed by chunk_length - 1 consecutive text tokens."""
    if chunk_length < 2 or n_chunks < 1:
        raise ConfigError(f"data.chunks needs n_chunks >= 1 and chunk_length >= 2; got {n_chunks}, {chunk_length}")
    if tokenizer.bos_token_id is None:
        raise ConfigError("the tokenizer has no BOS token; the chunk analyses need one at position 0")
    needed = n_chunks * (chunk_length - 1)
    stream = text_stream(tokenizer, Path(path), needed, text_field, source)
    available = len(stream) // (chunk_length - 1)
    if available < n_chunks:
        raise DataNotFoundError(f"{path} yields {available} chunks of {chunk_length} tokens, {n_chunks} needed "
                                f"({source}); add text or lower data.chunks.n_chunks / chunk_length")
    body = torch.tensor(stream[:needed]).view(n_chunks, chunk_length - 1)
    return torch.cat([torch.full((n_chunks, 1), tokenizer.bos_token_id), body], dim=1)
