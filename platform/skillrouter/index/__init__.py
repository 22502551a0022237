"""The Milvus skill index: versioned collections behind an alias (store), built and synced from a corpus."""
