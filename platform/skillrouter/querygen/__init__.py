"""Synthetic training queries: an OpenAI-compatible LLM path and an offline generator, both behind a leak guard."""
