"""The training harness: data, train step, evaluation and the main job ``python -m train``."""

from train.config import Config, parse_args
from train.data import Split, load_digits_split, train_batches
from train.train import TrainState, create_state, evaluate, init_params, run, train_step

__all__ = [
    "Config",
    "Split",
    "TrainState",
    "create_state",
    "evaluate",
    "init_params",
    "load_digits_split",
    "parse_args",
    "run",
    "train_batches",
    "train_step",
]
