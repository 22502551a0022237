"""False-negative filtering: drop mined negatives that are really positives (same name, near-duplicate body,
near-identical embedding), counting what each layer removed."""
