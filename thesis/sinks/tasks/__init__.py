"""Benchmarks of Table 5.8: GSM8K (exact match) and HumanEval (pass@1), read in their published formats."""
