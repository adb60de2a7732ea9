"""Self-contained demo pieces for fairseq-seqkd (built-in synthetic translation corpus)."""
