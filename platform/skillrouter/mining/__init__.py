"""Hard-negative mining: ten negatives per query from four sources, false negatives filtered out."""
