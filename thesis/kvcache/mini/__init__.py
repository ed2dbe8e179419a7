"""Miniature replication of Chapter 4 (spec F.b): a byte-level Llama trained here, then the thesis's claims."""
