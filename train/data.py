"""Data for the training harness: the embedded digits data set and mini-batching.

The embedded default is scikit-learn's ``load_digits``: 1797 real 8x8 grey-scale
handwritten digits (10 classes) that ship with scikit-learn, so the main job runs
without the internet.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from sklearn.datasets import load_digits

DIGITS_NUM_EXAMPLES = 1797
DIGITS_NUM_CLASSES = 10
DIGITS_TEST_SIZE = 360


class Split(NamedTuple):
  """A train/test split of images ``x`` (float32, ``[n, height, width, 1]``) and labels ``y``.

  Attributes:
    x_train: training images.
    y_train: training labels (int32).
    x_test: test images.
    y_test: test labels (int32).
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def load_digits_split(seed: int = 0, test_size: int = DIGITS_TEST_SIZE) -> Split:
  """Loads scikit-learn's digits and splits them at random, deterministically in ``seed``.

  Pixel values (0..16 in the data set) are scaled to ``[0, 1]``.

  Args:
    seed: the seed of the permutation that picks the test examples.
    test_size: the number of test examples (360 leaves 1437 for training).

  Returns:
    A :class:`Split` with images of shape ``[n, 8, 8, 1]``.
  """
  digits = load_digits()
  n = len(digits.target)
  if not 0 < test_size < n:
    raise ValueError(f"`test_size` must lie in (0, {n}), got {test_size}.")
  x = (digits.images / 16.0).astype(np.float32)[..., None]
  y = digits.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(n)
  test, train = order[:test_size], order[test_size:]
  return Split(x[train], y[train], x[test], y[test])


def num_batches(num_examples: int, batch_size: int) -> int:
  """The number of full mini-batches of ``batch_size`` in ``num_examples`` examples."""
  return num_examples // batch_size


def train_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields the shuffled mini-batches ``(x, y)`` of one epoch.

  The order depends only on ``(seed, epoch)``, so optimizers trained side by side
  see the same batches. The last partial batch is dropped, so every batch has
  ``batch_size`` examples (one compiled train step serves them all).

  Args:
    x: the training inputs, examples on the first axis.
    y: the training labels.
    batch_size: the number of examples per batch.
    seed: the run's seed.
    epoch: the epoch's index.

  Yields:
    ``num_batches(len(x), batch_size)`` pairs of arrays.
  """
  order = np.random.default_rng([seed, epoch]).permutation(len(x))
  for i in range(num_batches(len(x), batch_size)):
    idx = order[i * batch_size : (i + 1) * batch_size]
    yield x[idx], y[idx]
