"""The trained miniature of Section 5.4: synth_reasoning, a tiny Llama in llada/dream/arm modes, sink measurements."""
