"""Chapter 4 analyses on real models (thesis Figs. 4.2, 4.7-4.9, 4.29, 4.30, 4.40, 4.41, 4.47-4.50):
what in the keys, queries and hidden states explains which KV pairs receive attention.

One runner (`runner.run_analysis`) loads the model and the text chunks once, then runs the analyses
named in `method.analyses`, one module each: `alr` (attention loss ratio), `key_sparsity` (BOS key
activations and zeroing its peaked dimensions), `qk_geometry` (Q-Filters' query/key geometry),
`activation_stats` (Gaussianity of hidden states and queries) and `score_correlation` (press scores
against the attention future queries pay).
"""
