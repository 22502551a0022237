"""Model wrappers: the one place that knows each model's input format and pooling."""
