"""The main job's orchestration: its stages in order (`run`) and the paper's ablations (`ablations`)."""
