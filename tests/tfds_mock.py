"""``tfds.testing.mock_data`` for ``tfds.data_source``, with batched reads fixed.

In tensorflow-datasets 4.9.x, ``mock_data`` sets the mocked ArrayRecord reader's
``__getitems__`` to ``functools.partial(_getitems, generator=...)`` on a
``MagicMock``. ``__getitem__`` is a magic method that ``MagicMock`` binds to the
instance, but ``__getitems__`` is not one, so the partial is called without ``self``
and every batched read (``data_source.__getitems__(keys)``, which
:class:`train.data.TfdsSource` uses) fails with ``TypeError: _getitems() missing 1
required positional argument: 'record_keys'``. :func:`mock_tfds` patches the
module-level ``_getitems`` that the partial picks up, so both calling conventions
work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking


def _getitems(*args: Any, generator: Any, serialized: bool = False) -> list[Any]:
  """The fake records at ``record_keys`` (the last positional argument; ``self`` may precede)."""
  if serialized:
    raise NotImplementedError("serialized reads are not mocked")
  return [generator[int(key)] for key in args[-1]]


@contextlib.contextmanager
def mock_tfds(num_examples: int) -> Iterator[None]:
  """Within the context, ``tfds.data_source(name, split=...)`` reads random fake examples.

  Every split of every data set has ``num_examples`` examples, generated from the
  data set's features (``USE_CODE``: no metadata files, no data directory needed).

  Args:
    num_examples: the number of examples in each split.
  """
  with (
      tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE),
      mock.patch.object(mocking, "_getitems", _getitems),
  ):
    yield
