"""Metrics of the SkillRouter release, benchmark loaders (eval_core layout) and evaluation runs."""
