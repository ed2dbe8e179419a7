"""Section 5.2: the Mixture-of-Experts Graph Transformer for particle-collision events (README.md)."""
