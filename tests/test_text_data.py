"""Tests of the harness's text data: character language modelling and sentence classification.

Local files (``text:``, ``tsv:``) are written in ``tmp_path``; the tfds data sets
(``tiny_shakespeare``, ``glue/sst2``) are read from ``tests.tfds_mock``'s fake
records. Most language modelling texts are random, so a window's text identifies
where it was cut.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time

import numpy as np
import pytest

from tests.tfds_mock import mock_tfds
from train import data

SEED = 3
ALPHABET = "abcdefghijklmnopqrstuvwxyz ,.!?\n\r\téà—"


def _random_text(n: int, seed: int = 0) -> str:
  rng = np.random.default_rng(seed)
  return "".join(rng.choice(list(ALPHABET), size=n))


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
  path.write_bytes(text.encode("utf-8"))
  return path


def _lm(tmp_path, n=2000, context=8, test_fraction=0.1, seed=0):
  text = _random_text(n, seed)
  path = _write(tmp_path / "lm.txt", text)
  train, test, spec = data.load(f"text:{path}", context=context, test_fraction=test_fraction)
  return text, train, test, spec


def _epoch(source, spec, **kwargs):
  kwargs = {"batch_size": 16, "seed": SEED, "epoch": 0, "augment": True, **kwargs}
  return list(data.batches(source, spec, **kwargs))


def _num_windows(num_tokens: int, context: int) -> int:
  return max(0, (num_tokens - 1 - context) // context)


# Character language modelling from a local text file.


def test_text_file_vocabulary_split_and_spec(tmp_path):
  text, train, test, spec = _lm(tmp_path, n=2000, context=8, test_fraction=0.1)
  assert spec.kind == "lm" and spec.name == "lm"
  assert spec.vocab == "".join(sorted(set(text)))  # "\r", "\t" and non-ASCII included
  assert "\r" in spec.vocab and "—" in spec.vocab
  assert spec.num_classes == spec.vocab_size == len(spec.vocab)
  assert spec.image_shape == (8,)
  assert (spec.mean, spec.std, spec.pixel_scale) == ((0.0,), (1.0,), 1.0)
  # The last 10% of the characters, by position, is the test split.
  assert isinstance(train, data.TokenWindows) and train.tokens.dtype == np.int32
  assert data.decode(train.tokens, spec) == text[:1800]
  assert data.decode(test.tokens, spec) == text[1800:]
  assert (len(train), len(test)) == (_num_windows(1800, 8), _num_windows(200, 8)) == (223, 23)
  assert (spec.num_train, spec.num_test) == (len(train), len(test))


def test_text_file_relative_to_data_dir_and_seed_independent(tmp_path):
  text = _random_text(500)
  _write(tmp_path / "rel.txt", text)
  a, _, spec_a = data.load("text:rel.txt", data_dir=str(tmp_path), context=4, seed=0)
  b, _, spec_b = data.load(f"text:{tmp_path / 'rel.txt'}", context=4, seed=7)
  np.testing.assert_array_equal(a.tokens, b.tokens)  # the split is contiguous, not random
  assert spec_a == spec_b


def test_windows_are_inputs_and_targets_shifted_by_one_and_decode_to_the_text(tmp_path):
  text, train, _, spec = _lm(tmp_path, n=3000, context=16)
  train_text = text[: len(train.tokens)]
  order = np.random.default_rng([SEED, 0]).permutation(len(train))
  offsets = set()
  for b, (x, y) in enumerate(_epoch(train, spec)):
    assert x.shape == y.shape == (16, 16) and x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    for k, (xs, ys) in enumerate(zip(data.decode(x, spec), data.decode(y, spec), strict=True)):
      start = 16 * order[b * 16 + k]
      matches = [r for r in range(16) if train_text[start + r : start + r + 16] == xs]
      assert len(matches) == 1, "an example is no window of the text at its offset"
      r = matches[0]
      assert ys == train_text[start + r + 1 : start + r + 17]
      offsets.add(r)
  assert len(offsets) >= 12  # random offsets in [0, 16)


def test_windows_are_reproducible_in_seed_and_epoch(tmp_path):
  _, train, _, spec = _lm(tmp_path)
  a, b = _epoch(train, spec), _epoch(train, spec)
  for (xa, ya), (xb, yb) in zip(a, b, strict=True):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
  for change in ({"seed": SEED + 1}, {"epoch": 1}):
    other = _epoch(train, spec, **change)
    assert not np.array_equal(a[0][0], other[0][0])
  resumed = _epoch(train, spec, start_batch=3)
  np.testing.assert_array_equal(resumed[0][0], a[3][0])


def test_without_augmentation_windows_start_at_their_multiple_of_context(tmp_path):
  _, train, _, spec = _lm(tmp_path, context=8)
  order = np.random.default_rng([SEED, 0]).permutation(len(train))
  epoch = _epoch(train, spec, augment=False)
  assert len(epoch) == data.steps_per_epoch(len(train), 16)
  for b, (x, y) in enumerate(epoch):
    starts = 8 * order[b * 16 : (b + 1) * 16]
    np.testing.assert_array_equal(x, train.tokens[starts[:, None] + np.arange(8)])
    np.testing.assert_array_equal(y, train.tokens[starts[:, None] + np.arange(1, 9)])


def test_every_window_at_every_offset_lies_within_the_text():
  """Exhaustive over short texts: ``len`` follows the formula and no read passes the end."""
  for context in range(1, 7):
    for n in range(0, 8 * context):
      windows = data.TokenWindows(np.arange(n), context)
      assert len(windows) == _num_windows(n, context)
      if not len(windows):
        continue
      x, y = windows.get(np.arange(len(windows)))
      assert x.shape == y.shape == (len(windows), 2 * context - 1)
      np.testing.assert_array_equal(x, context * np.arange(len(windows))[:, None]
                                    + np.arange(2 * context - 1))
      np.testing.assert_array_equal(y, x + 1)
      assert y.max() <= n - 1  # the last target of the last window at offset context - 1
      with pytest.raises(IndexError):
        windows.get(np.array([len(windows)]))
      with pytest.raises(IndexError):
        windows.get(np.array([-1]))
      # Through the batching layer, at random offsets: still consecutive positions.
      spec = data.DataSpec("n", n, (context,), len(windows), 0, (0.0,), (1.0,), 1.0, kind="lm")
      for seed in range(3):
        for xb, yb in data.batches(windows, spec, batch_size=1, seed=seed, epoch=0, augment=True):
          np.testing.assert_array_equal(yb, xb + 1)
          assert xb.min() >= 0 and yb.max() <= n - 1


def test_eval_batches_cover_every_test_window_once_in_order(tmp_path):
  _, _, test, spec = _lm(tmp_path, n=2000, context=8)  # 23 test windows
  out = list(data.eval_batches(test, spec, batch_size=5))
  assert len(out) == 5
  for x, y, mask in out:
    assert x.shape == y.shape == (5, 8) and mask.shape == (5,)
    assert x.dtype == y.dtype == np.int32 and mask.dtype == bool
    assert np.all(x[~mask] == 0) and np.all(y[~mask] == 0)
  assert [int(mask.sum()) for _, _, mask in out] == [5, 5, 5, 5, 3]
  x = np.concatenate([x[mask] for x, _, mask in out])
  y = np.concatenate([y[mask] for _, y, mask in out])
  np.testing.assert_array_equal(x.ravel(), test.tokens[: 23 * 8])
  np.testing.assert_array_equal(y.ravel(), test.tokens[1 : 23 * 8 + 1])


def test_a_lm_source_read_into_memory_batches_the_same(tmp_path):
  _, train, _, spec = _lm(tmp_path)
  in_memory = data.Dataset(*train.get(np.arange(len(train))))
  for (xa, ya), (xb, yb) in zip(_epoch(train, spec), _epoch(in_memory, spec), strict=True):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)


def test_bad_text_files_and_arguments_raise_a_clear_error(tmp_path):
  path = _write(tmp_path / "short.txt", "abcdefghij" * 3)
  with pytest.raises(ValueError, match="too short"):
    data.load(f"text:{path}", context=8)
  with pytest.raises(ValueError, match="test_fraction"):
    data.load(f"text:{path}", context=2, test_fraction=1.0)
  with pytest.raises(ValueError, match="context"):
    data.load(f"text:{path}", context=0)
  with pytest.raises(ValueError, match="max_length"):
    data.load(f"tsv:{path}", max_length=0)
  (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1") * 100)
  with pytest.raises(ValueError, match="UTF-8"):
    data.load(f"text:{tmp_path / 'latin1.txt'}", context=2)


@pytest.mark.parametrize("prefix", ["text:", "tsv:"])
def test_a_missing_file_raises_a_one_line_error_naming_the_path(tmp_path, prefix):
  missing = tmp_path / "nowhere" / "missing.txt"
  with pytest.raises(FileNotFoundError) as info:
    data.load(f"{prefix}{missing}")
  message = str(info.value)
  assert "\n" not in message and str(missing) in message


def test_unknown_names_list_the_text_data_sets():
  with pytest.raises(ValueError) as info:
    data.load("shakespeare")
  for part in ["tiny_shakespeare", "glue/sst2", "text:PATH", "tsv:PATH", "npz:PATH", "cifar10"]:
    assert part in str(info.value)


def test_a_million_characters_load_and_batch_fast(tmp_path):
  path = _write(tmp_path / "big.txt", _random_text(1_000_000, seed=1))
  start = time.perf_counter()
  train, _, spec = data.load(f"text:{path}", context=64)
  assert time.perf_counter() - start < 1.0
  assert len(train.tokens) == 900_000
  start = time.perf_counter()
  for _, _ in zip(range(50), data.batches(train, spec, batch_size=32, seed=0, epoch=0,
                                          augment=True), strict=False):
    pass
  assert time.perf_counter() - start < 0.5


# Sentence classification from a local .tsv file.


def _write_tsv(path, rows, header=True):
  lines = ["sentence\tlabel"] if header else []
  lines += [f"{sentence}\t{label}" for sentence, label in rows]
  return _write(path, "\n".join(lines) + "\n")


@pytest.mark.parametrize("header", [True, False])
def test_tsv_sentences_are_byte_tokens_with_cls_and_padding(tmp_path, header):
  rows = [(f"sentence number {i} {'é' * (i % 3)}", i % 2) for i in range(40)]
  rows[7] = ("a long one " * 20, 1)  # 220 bytes: truncated
  rows[8] = ("with\ta tab", 0)  # the label follows the last tab
  path = _write_tsv(tmp_path / "sst.tsv", rows, header)
  train, test, spec = data.load(f"tsv:{path}", seed=SEED, test_fraction=0.25, max_length=24)
  assert spec.kind == "text" and spec.vocab is None and spec.vocab_size == data.BYTE_VOCAB
  assert (len(train), len(test), spec.num_train, spec.num_test) == (30, 10, 30, 10)
  assert spec.image_shape == (24,) and spec.num_classes == 2
  x = np.concatenate([train.x, test.x])
  y = np.concatenate([train.y, test.y])
  assert x.dtype == y.dtype == np.int32 and x.shape == (40, 24)
  assert np.all(x[:, 0] == data.CLS_ID) and x.max() < data.BYTE_VOCAB
  expected = {s.encode()[:23].decode("utf-8", errors="replace"): label for s, label in rows}
  decoded = data.decode(x, spec)
  assert sorted(zip(decoded, y.tolist(), strict=True)) == sorted(expected.items())
  for row, text in zip(x, decoded, strict=True):
    length = 1 + len(text.encode())
    if length < 24:
      assert np.all(row[length:] == data.PAD_ID) and np.all(row[1:length] >= data.BYTE_OFFSET)
  assert "with\ta tab" in decoded
  other, _, _ = data.load(f"tsv:{path}", seed=SEED + 1, test_fraction=0.25, max_length=24)
  assert not np.array_equal(other.x, train.x)


def test_tsv_batches_are_not_augmented_and_eval_batches_pad_with_pad(tmp_path):
  path = _write_tsv(tmp_path / "s.tsv", [(f"s{i}", i % 3) for i in range(21)])
  train, test, spec = data.load(f"tsv:{path}", test_fraction=0.2, max_length=6)
  assert spec.num_classes == 3
  for (xa, ya), (xb, yb) in zip(_epoch(train, spec, batch_size=4),
                                _epoch(train, spec, batch_size=4, augment=False), strict=True):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
  out = list(data.eval_batches(test, spec, batch_size=3))
  assert [int(m.sum()) for _, _, m in out] == [3, 1]
  x, y, mask = out[-1]
  assert x.shape == (3, 6) and np.all(x[~mask] == data.PAD_ID) and np.all(y[~mask] == 0)


@pytest.mark.parametrize(
    "content, match",
    [("sentence\tlabel\nno label here\n", "line 1"), ("good\t1\nbad\tx\n", "line 2"),
     ("neg\t-1\n", "non-negative"), ("sentence\tlabel\n", "at least one")],
)
def test_malformed_tsv_files_raise_a_clear_error(tmp_path, content, match):
  path = _write(tmp_path / "bad.tsv", content)
  with pytest.raises(ValueError, match=match):
    data.load(f"tsv:{path}")


def test_encode_sentences_and_decode_round_trip():
  ids = data.encode_sentences(["hé", b"raw", ""], 5)
  assert ids.tolist() == [[1, 106, 197, 171, 0], [1, 116, 99, 121, 0], [1, 0, 0, 0, 0]]
  spec = data.DataSpec("t", 2, (5,), 1, 1, (0.0,), (1.0,), 1.0, kind="text")
  assert data.decode(ids, spec) == ["hé", "raw", ""]
  assert data.decode(data.encode_sentences(["hé"], 3)[0], spec) == "h\ufffd"  # cut mid-character
  assert data.encode_sentences(["x"], 1).tolist() == [[data.CLS_ID]]
  with pytest.raises(ValueError, match="images"):
    data.decode(ids, dataclasses.replace(spec, kind="image"))


def test_data_spec_kind_defaults_to_image_and_is_checked():
  spec = data.DataSpec("d", 10, (8, 8, 1), 1, 1, (0.0,), (1.0,), 16.0, 0, False)
  assert spec.kind == "image" and spec.vocab is None and spec.vocab_size is None
  with pytest.raises(ValueError, match="kind"):
    dataclasses.replace(spec, kind="audio")


# The tfds text data sets, on mock data.


def _records(name, split, data_dir):
  import tensorflow_datasets as tfds

  source = tfds.data_source(name, split=split, data_dir=data_dir)
  return [source[i] for i in range(len(source))]


def test_tiny_shakespeare_on_mock_data(tmp_path):
  # The mock gives each split num_examples random strings; the real data set has one
  # record per split. The loader joins a split's records, so both read the same way.
  with mock_tfds(num_examples=30):
    train, test, spec = data.load("tiny_shakespeare", data_dir=str(tmp_path), context=8)
    texts = {split: "".join(r["text"] for r in _records("tiny_shakespeare", split, str(tmp_path)))
             for split in ("train", "validation", "test")}
  assert spec.kind == "lm" and spec.image_shape == (8,) and spec.name == "tiny_shakespeare"
  assert spec.vocab == "".join(sorted(set("".join(texts.values()))))
  assert spec.num_classes == len(spec.vocab)
  assert data.decode(train.tokens, spec) == texts["train"]
  assert data.decode(test.tokens, spec) == texts["validation"]
  assert len(train) == _num_windows(len(texts["train"]), 8) > 4
  for x, y in _epoch(train, spec, batch_size=4):
    assert x.shape == y.shape == (4, 8) and x.dtype == np.int32
    assert 0 <= x.min() and x.max() < spec.num_classes
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
  windows = sum(int(m.sum()) for _, _, m in data.eval_batches(test, spec, batch_size=4))
  assert windows == len(test) == spec.num_test


def test_glue_sst2_on_mock_data(tmp_path):
  with mock_tfds(num_examples=12):
    train, test, spec = data.load("glue/sst2", data_dir=str(tmp_path), max_length=10)
    assert isinstance(train, data.TfdsTextSource)
    reference = _records("glue/sst2", "validation", str(tmp_path))
    x, y = test.get(np.arange(len(test)))
    epoch = _epoch(train, spec, batch_size=4)
    plain = _epoch(train, spec, batch_size=4, augment=False)
    evaluated = list(data.eval_batches(test, spec, batch_size=5))
  assert spec.kind == "text" and spec.num_classes == 2 and spec.image_shape == (10,)
  assert (len(train), len(test), spec.num_train, spec.num_test) == (12, 12, 12, 12)
  assert x.shape == (12, 10) and x.dtype == y.dtype == np.int32
  assert np.all(x[:, 0] == data.CLS_ID) and x.max() < data.BYTE_VOCAB
  assert set(y.tolist()) <= {0, 1}
  for row, record in zip(x, reference, strict=True):
    raw = str(record["sentence"]).encode()[:9]
    np.testing.assert_array_equal(row[1 : 1 + len(raw)], np.frombuffer(raw, np.uint8) + 2)
    assert np.all(row[1 + len(raw) :] == data.PAD_ID)
  np.testing.assert_array_equal(y, [int(r["label"]) for r in reference])
  assert len(epoch) == 3
  for (xa, ya), (xb, yb) in zip(epoch, plain, strict=True):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
  assert sum(int(m.sum()) for _, _, m in evaluated) == 12


@pytest.mark.parametrize("name", ["tiny_shakespeare", "glue/sst2"])
def test_an_unprepared_tfds_text_data_set_names_itself_and_the_fix(tmp_path, name):
  with pytest.raises(FileNotFoundError) as info:
    data.load(name, data_dir=str(tmp_path))
  for part in [repr(name), str(tmp_path), "array_record", f"tfds build {name}"]:
    assert part in str(info.value)


# The real text beside the project (skipped when absent, as on a fresh clone).


@pytest.mark.slow
def test_real_tiny_shakespeare_text_file():
  from train.config import SHARED_DATA

  data_dir = pathlib.Path(os.environ.get("OPTAX_LS_DATA_DIR", SHARED_DATA))
  path = data_dir / "tiny_shakespeare_train.txt"
  if not path.exists():
    pytest.skip(f"{path} not found (set OPTAX_LS_DATA_DIR to the directory of the data)")
  start = time.perf_counter()
  train, test, spec = data.load("text:tiny_shakespeare_train.txt", data_dir=str(data_dir),
                                test_fraction=0.1, context=64)
  assert time.perf_counter() - start < 1.0
  assert len(spec.vocab) == spec.num_classes == 65
  assert (len(train.tokens), len(test.tokens)) == (903_469, 100_385)
  assert (len(train), len(test)) == (_num_windows(903_469, 64), _num_windows(100_385, 64))
  assert data.decode(train.tokens[:14], spec) == "First Citizen:"
  x, y = next(data.batches(train, spec, batch_size=32, seed=0, epoch=0, augment=True))
  assert x.shape == y.shape == (32, 64) and x.max() < 65
