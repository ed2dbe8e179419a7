"""Section 3.1: Adaptive Computation Modules (ACM): per-token variable-width layers."""
