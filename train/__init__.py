"""The training harness: data, optimizers by name, the sharded train step, checkpoints, reports.

``python -m train`` runs the embedded default (an MLP on scikit-learn's digits,
SLS against SGD); ``python -m train --config NAME`` runs one of the papers'
experiments (see :data:`train.config.CONFIGS`).
"""

from train.config import CONFIGS, Config, get_config, parse_args
from train.optimizers import OPTIMIZERS, OptimizerConfig, make_optimizer
from train.train import (
    TrainState,
    create_state,
    evaluate,
    find_in_state,
    global_batch,
    init_variables,
    make_mesh,
    replicate,
    run,
    train_one,
    train_step,
)

__all__ = [
    "CONFIGS",
    "OPTIMIZERS",
    "Config",
    "OptimizerConfig",
    "TrainState",
    "create_state",
    "evaluate",
    "find_in_state",
    "get_config",
    "global_batch",
    "init_variables",
    "make_mesh",
    "make_optimizer",
    "parse_args",
    "replicate",
    "run",
    "train_one",
    "train_step",
]
