"""Shared core: run directories, provenance, seeding, training and evaluation runners, FLOPs
counting, offline fixtures and the results pipeline. Chapters import it; it imports no chapter.

Submodules are imported explicitly (``from thesis.core.flops import count_flops``) so that a light
command does not pay for Lightning, timm or transformers.
"""
