"""The training/eval loop: precision, compile, checkpoints, resume, distributed."""
from vaitrain.engine.evaluate import evaluate_run
from vaitrain.engine.resume import prepare
from vaitrain.engine.train import RunResult, train

__all__ = ["train", "prepare", "evaluate_run", "RunResult"]
