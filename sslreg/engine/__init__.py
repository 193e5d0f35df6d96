"""The pretraining engine: optimizers, schedules, checkpoints, the loop, evaluation."""

from sslreg.engine.evaluate import evaluate_run, floors
from sslreg.engine.parts import RunParts, assemble
from sslreg.engine.run import pretrain

__all__ = ["RunParts", "assemble", "evaluate_run", "floors", "pretrain"]
