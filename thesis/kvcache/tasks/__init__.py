"""Evaluation tasks of Chapter 4: what a model is asked under a press, and how its answer is scored.

Two kinds (`base.py`): perplexity tasks give token sequences split into a compressed context and a
scored continuation (`perplexity.py`; read token by token under a decoding budget in
`streaming_perplexity.py`); generation tasks give `Sample`s (context, question,
references) answered by greedy decoding after the context was compressed (`generation.py`).
Generators: `needle.py`, `passkey.py`. Readers of the published benchmark files: `ruler.py`,
`longbench.py`, `loogle.py`, `zero_scrolls.py`, `math500.py`, `aime25.py`. Scores: `metrics.py`.
"""
