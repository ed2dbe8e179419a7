"""Section 5.4: attention sinks in masked diffusion language models (thesis/sinks/README.md)."""
