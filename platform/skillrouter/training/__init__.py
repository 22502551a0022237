"""Training: losses, collators and the Ray Train loops (DeepSpeed) for the encoder and the reranker."""
