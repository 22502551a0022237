"""Skill records, readers for every supported layout, ingestion with quarantine, the bundled sample corpus."""
