"""Sections 5.1 and 5.3: SpARE (SAE-based representation engineering for knowledge conflicts) and
residual-stream probing under knowledge conflicts. See README.md in this folder."""
