"""Console entry points of fairseq-seqkd."""
