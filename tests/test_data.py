"""Tests of the harness's data: loading (digits, .npz, tfds), batching, augmentation, normalisation.

Images in most tests are random uint8 with the label ``y`` equal to the example's
index, so that every output can be traced back to the stored image it came from and
checked against a NumPy float64 recomputation.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from tests.tfds_mock import mock_tfds
from train import data

SEED = 3


def _colour_source(n: int = 40, size: int = 8, channels: int = 3) -> data.Dataset:
  """Random uint8 images; the label of each example is its index."""
  x = np.random.default_rng(0).integers(0, 256, (n, size, size, channels), dtype=np.uint8)
  return data.Dataset(x, np.arange(n, dtype=np.int32))


def _spec(source: data.Dataset, **kwargs) -> data.DataSpec:
  _, height, width, channels = source.x.shape
  defaults = dict(
      name="test",
      num_classes=len(source),
      image_shape=(height, width, channels),
      num_train=len(source),
      num_test=0,
      mean=tuple(0.3 + 0.1 * c for c in range(channels)),
      std=tuple(0.2 + 0.05 * c for c in range(channels)),
  )
  return data.DataSpec(**{**defaults, **kwargs})


def _raw(x: np.ndarray, spec: data.DataSpec) -> np.ndarray:
  """Undoes the normalisation: the stored pixel values (float64)."""
  mean, std = np.asarray(spec.mean), np.asarray(spec.std)
  return (x.astype(np.float64) * std + mean) * spec.pixel_scale


def _epoch(source, spec, **kwargs) -> list[tuple[np.ndarray, np.ndarray]]:
  kwargs = {"batch_size": 8, "seed": SEED, "epoch": 0, "augment": True, **kwargs}
  return list(data.batches(source, spec, **kwargs))


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for (xa, ya), (xb, yb) in zip(a, b, strict=True):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)


class _CountingSource:
  """A source that records which indices were read."""

  def __init__(self, source):
    self.source = source
    self.read: list[int] = []

  def __len__(self):
    return len(self.source)

  def get(self, indices):
    self.read.extend(int(i) for i in indices)
    return self.source.get(indices)


# Order and determinism.


def test_batches_are_deterministic_in_seed_and_epoch():
  source = _colour_source()
  spec = _spec(source, augment_crop=2, augment_flip=True)
  _assert_same_batches(_epoch(source, spec), _epoch(source, spec))


@pytest.mark.parametrize("change", [{"epoch": 1}, {"seed": SEED + 1}])
def test_other_epochs_and_seeds_give_other_orders_and_augmentations(change):
  source = _colour_source()
  spec = _spec(source, augment_crop=2, augment_flip=True)
  base, other = _epoch(source, spec), _epoch(source, spec, **change)
  assert not np.array_equal(base[0][1], other[0][1])
  # The same examples, augmented differently: the batch holding example 0.
  def augmented(epoch_batches, index):
    for x, y in epoch_batches:
      if index in y:
        return x[list(y).index(index)]
    raise AssertionError(f"example {index} not found")
  differ = [not np.array_equal(augmented(base, i), augmented(other, i)) for i in range(8)]
  assert sum(differ) >= 4


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_an_epoch_is_a_permutation(drop_remainder):
  source = _colour_source(n=43)
  spec = _spec(source)
  epoch = _epoch(source, spec, drop_remainder=drop_remainder, augment=False)
  labels = np.concatenate([y for _, y in epoch])
  assert len(epoch) == data.steps_per_epoch(43, 8, drop_remainder=drop_remainder)
  assert len(np.unique(labels)) == len(labels)
  if drop_remainder:
    assert all(len(y) == 8 for _, y in epoch) and len(labels) == 40
  else:
    np.testing.assert_array_equal(np.sort(labels), np.arange(43))
  assert not np.array_equal(labels, np.arange(len(labels)))  # shuffled


@pytest.mark.parametrize("start_batch", [0, 2, 5])
def test_start_batch_resumes_exactly_without_reading_skipped_batches(start_batch):
  source = _colour_source()
  spec = _spec(source, augment_crop=2, augment_flip=True)
  full = _epoch(source, spec)
  counting = _CountingSource(source)
  resumed = _epoch(counting, spec, start_batch=start_batch)
  _assert_same_batches(full[start_batch:], resumed)
  skipped = np.concatenate([y for _, y in full[:start_batch]] + [np.zeros(0, np.int32)])
  assert not set(skipped.tolist()) & set(counting.read)
  assert len(counting.read) == 8 * (len(full) - start_batch)


def test_batches_reject_a_start_batch_past_the_epoch_and_bad_sizes():
  source = _colour_source()
  spec = _spec(source)
  with pytest.raises(ValueError, match="start_batch"):
    data.batches(source, spec, batch_size=8, seed=0, epoch=0, augment=False, start_batch=6)
  with pytest.raises(ValueError, match="batch_size"):
    data.batches(source, spec, batch_size=0, seed=0, epoch=0, augment=False)
  with pytest.raises(ValueError, match="batch_size"):
    data.eval_batches(source, spec, batch_size=0)
  too_large = dataclasses.replace(spec, image_shape=(10, 10, 3))
  with pytest.raises(ValueError, match="smaller"):
    next(data.eval_batches(source, too_large, batch_size=4))


# Normalisation and augmentation.


def test_images_are_normalised_per_channel_as_numpy_computes():
  source = _colour_source()
  spec = _spec(source)
  for x, y in _epoch(source, spec, augment=False):
    assert x.dtype == np.float32 and y.dtype == np.int32
    expected = (source.x[y] / 255.0 - np.asarray(spec.mean)) / np.asarray(spec.std)
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)


def test_dataset_statistics_centre_a_batch_per_channel(tmp_path):
  rng = np.random.default_rng(1)
  # Channels with very different brightness and contrast.
  x = np.stack([rng.integers(0, 60, (400, 6, 6)), rng.integers(100, 250, (400, 6, 6)),
                rng.integers(0, 255, (400, 6, 6))], axis=-1).astype(np.uint8)
  path = tmp_path / "stats.npz"
  np.savez(path, x=x, y=rng.integers(0, 3, 400))
  train, _, spec = data.load(f"npz:{path}")
  batch, _ = next(data.batches(train, spec, batch_size=256, seed=0, epoch=0, augment=False))
  np.testing.assert_allclose(batch.mean(axis=(0, 1, 2)), 0.0, atol=0.05)
  np.testing.assert_allclose(batch.std(axis=(0, 1, 2)), 1.0, atol=0.05)


def _windows(image: np.ndarray, pad: int, height: int, width: int):
  """Every crop window of the zero-padded image and its mirror: {(top, left, flipped): window}."""
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  out = {}
  for top in range(padded.shape[0] - height + 1):
    for left in range(padded.shape[1] - width + 1):
      window = padded[top : top + height, left : left + width]
      out[(top, left, False)] = window
      out[(top, left, True)] = window[:, ::-1]
  return out


@pytest.mark.parametrize("flip", [True, False])
def test_augmented_images_are_windows_of_the_zero_padded_image(flip):
  pad = 2
  source = _colour_source()
  spec = _spec(source, augment_crop=pad, augment_flip=flip)
  stored = source.x.copy()
  seen = set()
  for x, y in _epoch(source, spec):
    raw = np.rint(_raw(x, spec))
    for image, index in zip(raw, y, strict=True):
      matches = [
          key for key, window in _windows(source.x[index], pad, 8, 8).items()
          if np.array_equal(window, image)
      ]
      assert matches, f"example {index} is no window of its padded image"
      seen.update(matches)
  flips = {key[2] for key in seen}
  offsets = {key[:2] for key in seen}
  assert flips == ({False, True} if flip else {False})
  assert len(offsets) >= 10  # offsets vary (25 possible)
  np.testing.assert_array_equal(source.x, stored)  # augmentation works on copies


def test_larger_images_are_cropped_at_random_with_augmentation_and_centred_without():
  source = _colour_source(size=12)
  spec = _spec(source, image_shape=(8, 8, 3), augment_flip=False)
  for x, y in _epoch(source, spec, augment=False):
    np.testing.assert_allclose(np.rint(_raw(x, spec)), source.x[y][:, 2:10, 2:10])
  offsets = set()
  for x, y in _epoch(source, spec, augment=True):
    for image, index in zip(np.rint(_raw(x, spec)), y, strict=True):
      matches = [key for key, w in _windows(source.x[index], 0, 8, 8).items()
                 if not key[2] and np.array_equal(w, image)]
      assert matches
      offsets.update(matches)
  assert len(offsets) > 5


@pytest.mark.parametrize("name", ["digits", "mnist", "fashion_mnist"])
def test_grey_scale_data_sets_are_not_augmented(name):
  if name == "digits":
    train, _, spec = data.load("digits")
  else:
    with mock_tfds(num_examples=24):
      train, _, spec = data.load(name)
      train = data.Dataset(*train.get(np.arange(len(train))))
  assert spec.augment_crop == 0 and not spec.augment_flip
  _assert_same_batches(_epoch(train, spec, augment=True), _epoch(train, spec, augment=False))


def test_default_augmentation_per_data_set():
  defaults = {name: (i.augment_crop, i.augment_flip) for name, i in data.TFDS_DATASETS.items()}
  assert defaults["cifar10"] == defaults["cifar100"] == (4, True)
  assert defaults["svhn_cropped"] == (4, False)  # a mirrored digit is another digit
  assert defaults["imagenet2012"] == (0, True)


# Evaluation batches.


@given(n=st.integers(1, 30), batch_size=st.integers(1, 12))
def test_eval_batches_cover_every_example_once_in_order(n, batch_size):
  source = _colour_source(n=n, size=4)
  spec = _spec(source)
  out = list(data.eval_batches(source, spec, batch_size=batch_size))
  assert len(out) == -(-n // batch_size)
  for x, y, mask in out:
    assert x.shape == (batch_size, 4, 4, 3) and y.shape == mask.shape == (batch_size,)
    assert np.all(x[~mask] == 0) and np.all(y[~mask] == 0)
  labels = np.concatenate([y[mask] for _, y, mask in out])
  np.testing.assert_array_equal(labels, np.arange(n))
  images = np.concatenate([x[mask] for x, _, mask in out])
  np.testing.assert_allclose(np.rint(_raw(images, spec)), source.x, atol=0)


# Loading: digits, .npz, tfds.


def test_digits_split_partitions_the_data_set():
  train, test, spec = data.load("digits", seed=SEED, test_fraction=0.2)
  assert (spec.num_train, spec.num_test) == (len(train), len(test)) == (1438, 359)
  assert spec.image_shape == (8, 8, 1) and spec.num_classes == 10
  digits = load_digits()

  def rows(images, labels):
    flat = np.concatenate([images.reshape(len(images), -1), labels[:, None]], axis=1)
    return flat[np.lexsort(flat.T[::-1])]

  both = rows(np.concatenate([train.x, test.x]).astype(np.float64),
              np.concatenate([train.y, test.y]))
  np.testing.assert_array_equal(both, rows(digits.images, digits.target))
  assert len(np.unique(both, axis=0)) == len(both)  # no image twice: train and test are disjoint
  x, _, _ = next(data.eval_batches(test, spec, batch_size=len(test)))
  np.testing.assert_allclose(x, test.x / 16.0, atol=1e-6)
  other, _, _ = data.load("digits", seed=SEED + 1, test_fraction=0.2)
  assert not np.array_equal(train.y, other.y)


def _write_npz(path: pathlib.Path, n: int = 50, **extra) -> np.ndarray:
  x = np.random.default_rng(2).integers(0, 256, (n, 6, 6, 3), dtype=np.uint8)
  x[:, 0, 0, 0] = np.arange(n)  # an id in every image
  np.savez(path, x=x, y=np.arange(n) % 4, **extra)
  return x


def test_npz_split_is_deterministic_disjoint_and_complete(tmp_path):
  x = _write_npz(tmp_path / "tiny.npz")
  train, test, spec = data.load(f"npz:{tmp_path / 'tiny.npz'}", seed=SEED, test_fraction=0.2)
  assert (len(train), len(test), spec.num_train, spec.num_test) == (40, 10, 40, 10)
  assert spec.name == "tiny" and spec.num_classes == 4 and spec.image_shape == (6, 6, 3)
  assert (spec.augment_crop, spec.augment_flip, spec.pixel_scale) == (4, True, 255.0)
  ids_train, ids_test = train.x[:, 0, 0, 0], test.x[:, 0, 0, 0]
  np.testing.assert_array_equal(np.sort(np.concatenate([ids_train, ids_test])), np.arange(50))
  np.testing.assert_array_equal(train.y, ids_train % 4)
  again, _, _ = data.load("npz:tiny.npz", data_dir=str(tmp_path), seed=SEED, test_fraction=0.2)
  np.testing.assert_array_equal(again.x, train.x)
  other, _, _ = data.load(f"npz:{tmp_path / 'tiny.npz'}", seed=SEED + 1, test_fraction=0.2)
  assert not np.array_equal(other.x, train.x)
  # Statistics of the training split, on the [0, 1] scale.
  raw = x[np.sort(ids_train)].astype(np.float64) / 255.0
  np.testing.assert_allclose(spec.mean, raw.mean(axis=(0, 1, 2)), rtol=1e-9)
  np.testing.assert_allclose(spec.std, raw.std(axis=(0, 1, 2)), rtol=1e-6)


def test_npz_with_a_test_split_and_grey_scale_images(tmp_path):
  rng = np.random.default_rng(4)
  path = tmp_path / "grey.npz"
  np.savez(path, x=rng.integers(0, 256, (20, 5, 5), dtype=np.uint8), y=rng.integers(0, 3, 20),
           x_test=rng.integers(0, 256, (7, 5, 5), dtype=np.uint8), y_test=np.full(7, 6))
  train, test, spec = data.load(f"npz:{path}")
  assert (len(train), len(test)) == (20, 7)
  assert spec.image_shape == (5, 5, 1) and spec.num_classes == 7
  assert (spec.augment_crop, spec.augment_flip) == (0, False)
  x, y = test.get(np.arange(7))
  assert x.shape == (7, 5, 5, 1) and y.dtype == np.int32


def test_npz_float_images_are_taken_on_the_unit_scale(tmp_path):
  path = tmp_path / "float.npz"
  np.savez(path, x=np.random.default_rng(5).random((30, 4, 4, 1)), y=np.zeros(30, np.int64))
  train, _, spec = data.load(f"npz:{path}")
  assert spec.pixel_scale == 1.0 and 0.4 < spec.mean[0] < 0.6
  x, y = next(data.batches(train, spec, batch_size=27, seed=0, epoch=0, augment=False))
  np.testing.assert_allclose(x.mean(), 0.0, atol=1e-5)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x": np.zeros((3, 4, 4, 1))}, "`x` and `y`"),
        ({"x": np.zeros((3, 4, 4, 1)), "y": np.zeros(2, np.int64)}, r"\[n\]"),
        ({"x": np.zeros((3, 4, 4, 1)), "y": np.full(3, -1)}, "non-negative integer"),
        ({"x": np.zeros((3, 4, 4, 1)), "y": np.zeros(3, int), "x_test": np.zeros((1, 4, 4, 1))},
         "both"),
    ],
)
def test_malformed_npz_files_raise_a_clear_error(tmp_path, arrays, match):
  np.savez(tmp_path / "bad.npz", **arrays)
  with pytest.raises(ValueError, match=match):
    data.load(f"npz:{tmp_path / 'bad.npz'}")


def test_bad_names_paths_and_fractions_raise_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="'imagenet'.*cifar10.*npz:PATH"):
    data.load("imagenet")
  with pytest.raises(FileNotFoundError, match="missing.npz"):
    data.load(f"npz:{tmp_path / 'missing.npz'}")
  with pytest.raises(ValueError, match="test_fraction"):
    data.load("digits", test_fraction=1.0)


def test_an_unprepared_tfds_data_set_names_itself_its_directory_and_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError) as info:
    data.load("cifar10", data_dir=str(tmp_path))
  message = str(info.value)
  for part in ["'cifar10'", str(tmp_path), "array_record", "tfds build cifar10"]:
    assert part in message


@pytest.mark.parametrize(
    "name, test_split_shape",
    [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3)), ("cifar100", (32, 32, 3)),
     ("svhn_cropped", (32, 32, 3)), ("imagenet2012", (224, 224, 3))],
)
def test_tfds_data_sets_load_through_data_source_on_mock_data(tmp_path, name, test_split_shape):
  import tensorflow_datasets as tfds

  n = 10 if name == "imagenet2012" else 20
  with mock_tfds(num_examples=n):
    train, test, spec = data.load(name, data_dir=str(tmp_path))
    assert isinstance(train, data.TfdsSource)
    assert (len(train), len(test), spec.num_train, spec.num_test) == (n, n, n, n)
    assert spec.image_shape == test_split_shape
    assert spec.num_classes == data.TFDS_DATASETS[name].num_classes
    # The batched read returns what the data source gives one example at a time.
    reference = tfds.data_source(name, split="train", data_dir=str(tmp_path))
    indices = np.array([3, 0, 7])
    x, y = train.get(indices)
    assert x.dtype == np.uint8 and y.dtype == np.int32 and len(x) == 3
    np.testing.assert_array_equal(y, [reference[int(i)]["label"] for i in indices])
    if name != "imagenet2012":
      np.testing.assert_array_equal(x, [reference[int(i)]["image"] for i in indices])
    else:
      assert x.shape[1:] == (data.IMAGENET_RESIZE, data.IMAGENET_RESIZE, 3)
    epoch = list(data.batches(train, spec, batch_size=4, seed=0, epoch=0, augment=True))
    assert len(epoch) == n // 4
    assert all(x.shape == (4, *test_split_shape) and x.dtype == np.float32 for x, _ in epoch)
    evaluated = list(data.eval_batches(test, spec, batch_size=4))
    assert sum(int(mask.sum()) for _, _, mask in evaluated) == n


def test_imagenet_resize_keeps_the_centre_of_the_short_side():
  image = np.zeros((40, 80, 3), np.uint8)
  image[:, 20:60] = 255  # the centred 40x40 square is white, the sides black
  out = data._resize_centre_crop(image, 16)
  assert out.shape == (16, 16, 3)
  assert out[:, 1:-1].min() > 200  # the centre square fills the crop


def test_steps_per_epoch():
  assert data.steps_per_epoch(10, 3) == 3
  assert data.steps_per_epoch(10, 3, drop_remainder=False) == 4
  assert data.steps_per_epoch(9, 3, drop_remainder=False) == 3


def test_data_spec_is_frozen():
  spec = _spec(_colour_source())
  with pytest.raises(dataclasses.FrozenInstanceError):
    spec.name = "other"


# The real subsets beside the project (skipped when absent, as on a fresh clone).

_DEFAULT_DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
_DATA_DIR = pathlib.Path(
    os.environ.get("OPTAX_LS_DATA_DIR", os.environ.get("OPTAX_LS_DATA", _DEFAULT_DATA_DIR))
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "file, shape, mean",
    [("cifar10_subset.npz", (32, 32, 3), (0.4914, 0.4822, 0.4465)),
     ("mnist_subset.npz", (28, 28, 1), (0.1307,))],
)
def test_real_subsets_load_split_and_normalise(file, shape, mean):
  path = _DATA_DIR / file
  if not path.exists():
    pytest.skip(f"{path} not found (set OPTAX_LS_DATA_DIR to the directory of the data subsets)")
  train, test, spec = data.load(f"npz:{file}", data_dir=str(_DATA_DIR), seed=0, test_fraction=0.1)
  total = len(np.load(path)["y"])
  assert spec.num_test == len(test) == round(0.1 * total)
  assert spec.num_train + spec.num_test == total
  assert spec.image_shape == shape and spec.num_classes == 10
  np.testing.assert_allclose(spec.mean, mean, atol=0.03)  # close to the full data set's
  x, y = next(data.batches(train, spec, batch_size=512, seed=0, epoch=0, augment=False))
  assert x.shape == (512, *shape) and y.max() < 10
  np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0.0, atol=0.1)
  np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1.0, atol=0.1)
  x, _ = next(data.batches(train, spec, batch_size=512, seed=0, epoch=0, augment=True))
  assert x.shape == (512, *shape) and np.isfinite(x).all()
