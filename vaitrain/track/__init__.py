"""Records of a run: run directory, atomic writes, metrics.jsonl, TensorBoard, progress."""
