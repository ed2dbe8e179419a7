"""Offline fixtures of the spare chapter's sources, in their real on-disk formats (see fixtures.py).

- `nqswap_tiny`: NQSwap's split `dev` as `dev.jsonl` (the hub dataset saved with `to_json`), fields
  question / org_context / org_answer (list) / sub_context / sub_answer (list); 24 entities x 2
  relations, each fact with two substituted answers, so two rows share a question (96 rows).
- `macnoise_tiny`: Macnoise's splits `train_chatgpt` (evaluation) and `train` (demonstration pool)
  in the hub layout `data/<split>-00000-of-00001.jsonl`, same fields.
- `spare_tiny_llama`, `spare_tiny_gemma2`: random-init 4-layer LlamaForCausalLM / Gemma2ForCausalLM
  (hidden 64, 4 heads / 2 KV heads) with a byte-level BPE tokenizer, saved with `save_pretrained`.
- `spare_sae_tiny_eleuther`: EleutherAI/sae layout `layers.{1,2}/{cfg.json, sae.safetensors}` (d 64,
  n 256, TopK k 8); `spare_sae_tiny_gemmascope`: GemmaScope `layer_{1,2}/width_131k/canonical/params.npz`
  (JumpReLU, d 64, n 256); `spare_sae_tiny_saelens`: SAELens `cfg.json` + `sae_weights.safetensors`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from thesis.core.fixtures import _save_random_hf_model, fixture

ENTITIES = ("aldor", "brisk", "calla", "dunmore", "elvan", "fenwick", "garro", "hollis", "ivel", "jarrow", "kestel",
            "lumen", "morrow", "nettle", "orlin", "pell", "quarry", "rook", "selby", "tarn", "ulric", "vance",
            "wren", "yarrow")
RELATIONS = ("capital", "founder")
VALUES = ("paris", "oslo", "lima", "kyoto", "cairo", "quito", "perth", "dakar", "hanoi", "turin", "sofia", "accra",
          "riga", "bern", "doha", "male", "apia", "suva", "baku", "kiev")
SAE_LAYERS = (1, 2)
TINY_D, TINY_N, TINY_K = 64, 256, 8


def kc_rows(seed: int, n_entities: int = len(ENTITIES), substitutes: int = 2) -> list[dict]:
    """NQSwap-schema rows of a seeded fact world; each fact appears once per substituted answer."""
    rng = np.random.default_rng(seed)
    rows = []
    for entity in ENTITIES[:n_entities]:
        for relation in RELATIONS:
            true, *subs = rng.choice(VALUES, size=1 + substitutes, replace=False)
            for sub in subs:
                rows.append({"question": f"what is the {relation} of {entity}?",
                             "org_context": f"the {relation} of {entity} is {true}.", "org_answer": [str(true), f"{true} city"],
                             "sub_context": f"the {relation} of {entity} is {sub}.", "sub_answer": [str(sub)]})
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@fixture("nqswap_tiny")
def nqswap_tiny(out: Path) -> None:
    _write_jsonl(out / "dev.jsonl", kc_rows(0))


@fixture("macnoise_tiny")
def macnoise_tiny(out: Path) -> None:
    rows = kc_rows(1)
    _write_jsonl(out / "data" / "train_chatgpt-00000-of-00001.jsonl", rows[:64])
    _write_jsonl(out / "data" / "train-00000-of-00001.jsonl", kc_rows(2, n_entities=8, substitutes=1))


def _kc_tokenizer(out: Path):
    """A byte-level BPE trained on the fixture world's prompts, saved as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = []
    for seed in range(3):
        for row in kc_rows(seed):
            texts += [f"context: {row['org_context']}\nquestion: {row['question']}\nanswer: {row['org_answer'][0]}\n\n",
                      f"context: {row['sub_context']}\nquestion: {row['question']}\nanswer: {row['sub_answer'][0]}"]
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(out)
    return fast


def _save_lm(out: Path, family: str) -> None:
    from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

    tokenizer = _kc_tokenizer(out)
    common = dict(vocab_size=len(tokenizer), hidden_size=TINY_D, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    if family == "gemma2":
        _save_random_hf_model(out, lambda: Gemma2ForCausalLM(Gemma2Config(head_dim=16, sliding_window=64, **common)))
    else:
        _save_random_hf_model(out, lambda: LlamaForCausalLM(LlamaConfig(**common)))


@fixture("spare_tiny_llama")
def spare_tiny_llama(out: Path) -> None:
    _save_lm(out, "llama")


@fixture("spare_tiny_gemma2")
def spare_tiny_gemma2(out: Path) -> None:
    _save_lm(out, "gemma2")


def random_sae_tensors(seed: int, d: int = TINY_D, n: int = TINY_N) -> dict[str, np.ndarray]:
    """Seeded SAE parameters in GemmaScope orientation: W_enc (d, n), W_dec (n, d) with unit rows."""
    rng = np.random.default_rng(seed)
    W_dec = rng.standard_normal((n, d)).astype(np.float32)
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    return {"W_enc": (W_dec.T * 0.5).copy(), "W_dec": W_dec, "b_enc": (0.01 * rng.standard_normal(n)).astype(np.float32),
            "b_dec": (0.01 * rng.standard_normal(d)).astype(np.float32),
            "threshold": np.full(n, 0.05, dtype=np.float32)}


@fixture("spare_sae_tiny_eleuther")
def spare_sae_tiny_eleuther(out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    for layer in SAE_LAYERS:
        params = random_sae_tensors(layer)
        folder = out / f"layers.{layer}"
        folder.mkdir()
        (folder / "cfg.json").write_text(json.dumps({"expansion_factor": TINY_N // TINY_D, "normalize_decoder": True,
                                                     "num_latents": TINY_N, "k": TINY_K, "multi_topk": False,
                                                     "d_in": TINY_D}))
        save_file({"encoder.weight": torch.from_numpy(params["W_enc"].T.copy()),
                   "encoder.bias": torch.from_numpy(params["b_enc"]), "W_dec": torch.from_numpy(params["W_dec"]),
                   "b_dec": torch.from_numpy(params["b_dec"])}, str(folder / "sae.safetensors"))


@fixture("spare_sae_tiny_gemmascope")
def spare_sae_tiny_gemmascope(out: Path) -> None:
    for layer in SAE_LAYERS:
        folder = out / f"layer_{layer}" / "width_131k" / "canonical"
        folder.mkdir(parents=True)
        np.savez(folder / "params.npz", **random_sae_tensors(layer))


@fixture("spare_sae_tiny_saelens")
def spare_sae_tiny_saelens(out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    for layer in SAE_LAYERS:
        folder = out / f"layer_{layer}"
        folder.mkdir()
        (folder / "cfg.json").write_text(json.dumps({"architecture": "jumprelu", "d_in": TINY_D, "d_sae": TINY_N,
                                                     "apply_b_dec_to_input": False, "hook_name":
                                                     f"blocks.{layer}.hook_resid_post", "dtype": "float32"}))
        save_file({k: torch.from_numpy(v) for k, v in random_sae_tensors(layer).items()},
                  str(folder / "sae_weights.safetensors"))
