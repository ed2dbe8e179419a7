"""Chapter 4: KV cache compression (KNorm 4.1, Q-Filters 4.2, Expected Attention 4.3) as presses."""
