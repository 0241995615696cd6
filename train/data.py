"""Data for the training harness: loading, mini-batching, augmentation and normalisation.

Images, all read with NumPy only (no TensorFlow), from three places:

* ``"digits"``: scikit-learn's ``load_digits``, 1797 real 8x8 grey-scale handwritten
  digits (10 classes) that ship with scikit-learn: the embedded default, so the main
  job runs without the internet.
* a TensorFlow Datasets name (:data:`TFDS_DATASETS`): read through
  ``tfds.data_source``, random access to the ``array_record`` files of a prepared
  dataset (TensorFlow is not needed to read them).
* ``"npz:PATH"``: arrays ``x``, ``y`` (and optionally ``x_test``, ``y_test``) in a
  local ``.npz`` file, e.g. the real subsets in ``../shared/data``.

Text, of two kinds (:attr:`DataSpec.kind`):

* ``"lm"``, character language modelling: ``"tiny_shakespeare"`` (tfds) or
  ``"text:PATH"``, a local UTF-8 text file whose last ``test_fraction`` of characters
  is the test split. Tokens are characters; examples are windows of ``context``
  characters and the targets are the same windows shifted by one
  (:class:`TokenWindows`).
* ``"text"``, sentence classification: ``"glue/sst2"`` (tfds) or ``"tsv:PATH"``, a
  local ``sentence<TAB>label`` file. Tokens are the bytes of the UTF-8 sentence
  (:func:`encode_sentences`): ``[CLS, bytes..., PAD...]`` of ``max_length`` ids.

:func:`load` gives the two splits as *sources* (anything with ``__len__`` and
``get(indices) -> (x, y)``) and a :class:`DataSpec`; :func:`batches` and
:func:`eval_batches` turn a source into mini-batches (normalised float32 NHWC images,
or int32 tokens), in an order (and with augmentation) fixed by ``(seed, epoch)``, so
optimizers trained side by side see the same batches and a run resumed mid-epoch
sees the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

import numpy as np
from sklearn.datasets import load_digits

from models.transformer import BYTE_OFFSET, CLS_ID, PAD_ID

DIGITS_NUM_CLASSES = 10

IMAGENET_RESIZE = 256
"""ImageNet images are resized (short side) and centre-cropped to this square."""

NPZ_PREFIX = "npz:"
TEXT_PREFIX = "text:"
"""The prefix of a local text file for character language modelling (``"text:PATH"``)."""
TSV_PREFIX = "tsv:"
"""The prefix of a local ``sentence<TAB>label`` file for classification (``"tsv:PATH"``)."""

KINDS = ("image", "lm", "text")
"""The kinds of data (:attr:`DataSpec.kind`): images, character language modelling and
sentence classification."""

# The byte tokens of sentence classification are the encoder's (models.transformer): PAD_ID
# pads (and eval_batches pads with it), CLS_ID starts every sentence, a byte b is the token
# b + BYTE_OFFSET.
BYTE_VOCAB = BYTE_OFFSET + 256
"""The number of token ids of sentence classification: PAD, CLS and 256 bytes."""


class Source(Protocol):
  """One split of a data set with random access: what :func:`batches` reads."""

  def __len__(self) -> int:
    """The number of examples."""

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The examples at ``indices``, ``(x, y)``; what they hold depends on the kind of data.

    Images: ``[n, H, W, C]`` (uint8, or float on ``[0, 1]``) and int32 labels ``[n]``.
    Language modelling: int32 inputs and targets ``[n, 2 * context - 1]``, the targets
    shifted by one (:class:`TokenWindows`). Sentence classification: int32 tokens
    ``[n, max_length]`` and int32 labels ``[n]``.
    """


class Dataset(NamedTuple):
  """One split held in memory: images ``x`` ``[n, H, W, C]`` and int32 labels ``y`` ``[n]``.

  A :class:`Source`: ``len(dataset)`` is the number of examples (not 2).

  Attributes:
    x: the images, uint8 (or float on the ``[0, 1]`` scale), NHWC.
    y: the labels, int32.
  """

  x: np.ndarray
  y: np.ndarray

  def __len__(self) -> int:
    return len(self.y)

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The examples at ``indices``, as ``(images, labels)``."""
    return self.x[indices], self.y[indices]


class TfdsSource:
  """One split of a prepared TensorFlow Datasets data set, read through ``tfds.data_source``.

  :meth:`get` reads a batch with the data source's ``__getitems__`` (one batched
  random access; tfds decodes the images). ImageNet images, of varying sizes, are
  resized so that their short side is ``resize`` pixels and centre-cropped to a
  ``resize`` x ``resize`` square (PIL, bilinear with antialiasing).

  Args:
    data_source: the object ``tfds.data_source(name, split=...)`` returns.
    resize: the side of the square images are resized to, or None to keep them.
  """

  def __init__(self, data_source: Any, resize: int | None = None):
    self.data_source = data_source
    self.resize = resize

  def __len__(self) -> int:
    return len(self.data_source)

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The examples at ``indices``, as ``(uint8 images [n, H, W, C], int32 labels [n])``."""
    records = self.data_source.__getitems__([int(i) for i in np.asarray(indices).ravel()])
    images = [np.asarray(r["image"]) for r in records]
    if self.resize is not None:
      images = [_resize_centre_crop(image, self.resize) for image in images]
    labels = np.asarray([r["label"] for r in records], dtype=np.int32)
    return np.stack(images), labels


class TokenWindows:
  """One split of a tokenised text for language modelling: windows of ``context`` tokens.

  Window ``i`` starts at token ``i * context``. :meth:`get` returns, for each window,
  ``2 * context - 1`` input tokens and the same tokens shifted by one as targets, so
  that :func:`batches` can cut an example ``tokens[s + r : s + r + context]`` (targets
  ``tokens[s + r + 1 : s + r + 1 + context]``) at any offset ``r`` in
  ``[0, context)`` from the start ``s``: a random one for training, 0 for evaluation.
  ``len(windows)`` is ``(len(tokens) - 1 - context) // context`` (0 when the text is
  too short), so an epoch reads about as many tokens as the split holds and the
  last window never reads past the end; evaluation (``r = 0``) predicts every token
  from position 1 to ``len(windows) * context``.

  Args:
    tokens: the split's token ids, 1-D.
    context: the number of tokens of one example.

  Attributes:
    tokens: the split's token ids, int32 ``[n_tokens]``.
    context: the number of tokens of one example.

  Example:
    >>> windows = TokenWindows(np.arange(20), context=4)
    >>> len(windows)
    3
    >>> x, y = windows.get(np.array([2]))
    >>> x.tolist(), y.tolist()
    ([[8, 9, 10, 11, 12, 13, 14]], [[9, 10, 11, 12, 13, 14, 15]])
  """

  def __init__(self, tokens: np.ndarray, context: int):
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
      raise ValueError(f"`tokens` must be 1-D, got shape {tokens.shape}.")
    if context < 1:
      raise ValueError(f"`context` must be positive, got {context}.")
    self.tokens = tokens.astype(np.int32, copy=False)
    self.context = int(context)

  def __len__(self) -> int:
    return max(0, (len(self.tokens) - 1 - self.context) // self.context)

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The windows at ``indices``: int32 inputs and targets ``[n, 2 * context - 1]``."""
    indices = np.asarray(indices, dtype=np.int64).ravel()
    if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
      raise IndexError(f"Window indices must lie in [0, {len(self)}), got {indices}.")
    span = 2 * self.context
    windows = np.lib.stride_tricks.sliding_window_view(self.tokens, span)[indices * self.context]
    return windows[:, :-1], windows[:, 1:]


class TfdsTextSource:
  """One split of a prepared tfds sentence classification data set (``glue/sst2``).

  :meth:`get` reads a batch of records with the data source's ``__getitems__`` and
  tokenises their sentences with :func:`encode_sentences`.

  Args:
    data_source: the object ``tfds.data_source(name, split=...)`` returns.
    max_length: the number of tokens of one example.
    text_key: the feature holding the sentence.

  Attributes:
    data_source: the tfds data source.
    max_length: the number of tokens of one example.
    text_key: the feature holding the sentence.
  """

  def __init__(self, data_source: Any, max_length: int, text_key: str = "sentence"):
    self.data_source = data_source
    self.max_length = max_length
    self.text_key = text_key

  def __len__(self) -> int:
    return len(self.data_source)

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The examples at ``indices``: int32 tokens ``[n, max_length]`` and int32 labels ``[n]``."""
    records = self.data_source.__getitems__([int(i) for i in np.asarray(indices).ravel()])
    tokens = encode_sentences([_as_str(r[self.text_key]) for r in records], self.max_length)
    labels = np.asarray([int(np.asarray(r["label"])) for r in records], dtype=np.int32)
    return tokens, labels


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What the model and the harness need to know about a data set.

  Images reach the model as ``(x / pixel_scale - mean) / std`` per channel, of shape
  ``image_shape``. With augmentation, a training image is zero-padded by
  ``augment_crop`` pixels on each side (in pixel space: the padding is black), a
  random ``image_shape`` window is cut out of it, and the window is mirrored
  left-right with probability 1/2 when ``augment_flip``. Sources whose images are
  larger than ``image_shape`` (ImageNet: 256 for 224) are cropped the same way: a
  random window with augmentation, the centred one without.

  Defaults per data set: CIFAR-10/100: crop 4 + flip (the standard CIFAR
  augmentation); SVHN: crop 4, no flip (mirrored digits are other digits);
  MNIST, Fashion-MNIST, digits: none; ImageNet: random 224 crop of the 256-square
  + flip (a simple stand-in for the usual random-resized crop); ``.npz``: crop 4 +
  flip for colour images, none for grey-scale ones.

  Text (``kind`` ``"lm"`` or ``"text"``) reaches the model as int32 token ids of
  shape ``image_shape`` (``(context,)`` or ``(max_length,)``); ``mean``, ``std``,
  ``pixel_scale`` and the ``augment_*`` fields are unused (``(0.0,)``, ``(1.0,)``,
  1, 0, False). For ``"lm"`` the inputs and targets are ``[context]`` token ids,
  ``num_classes`` is the vocabulary size, the examples are windows
  (:class:`TokenWindows`) and augmentation draws each window's offset; for
  ``"text"`` the tokens are bytes (:func:`encode_sentences`), ``num_classes`` is the
  number of labels and nothing is augmented. :attr:`vocab_size` is the number of
  input token ids.

  Attributes:
    name: the data set's name.
    num_classes: the number of classes (for ``"lm"``: the vocabulary size, the
      model's output classes).
    image_shape: the shape of one input example: ``(height, width, channels)`` of
      an image, ``(context,)`` for ``"lm"``, ``(max_length,)`` for ``"text"``.
    num_train: the number of training examples (for ``"lm"``: windows).
    num_test: the number of test examples (for ``"lm"``: windows).
    mean: the per-channel mean, on the ``[0, 1]`` scale.
    std: the per-channel standard deviation, on the ``[0, 1]`` scale.
    pixel_scale: the value of a white pixel in the stored images (255 for uint8;
      16 for digits; 1 for float images already on ``[0, 1]``).
    augment_crop: the zero padding (pixels per side) before the random crop; 0 for
      no padding.
    augment_flip: whether augmentation mirrors images left-right.
    kind: ``"image"``, ``"lm"`` (character language modelling) or ``"text"``
      (sentence classification), see :data:`KINDS`.
    vocab: for ``"lm"``, the characters of the vocabulary in the order of their
      ids (token ``i`` is ``vocab[i]``; see :func:`decode`); None otherwise.
  """

  name: str
  num_classes: int
  image_shape: tuple[int, ...]
  num_train: int
  num_test: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  pixel_scale: float = 255.0
  augment_crop: int = 0
  augment_flip: bool = False
  kind: str = "image"
  vocab: str | None = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"`kind` must be one of {KINDS}, got {self.kind!r}.")

  @property
  def vocab_size(self) -> int | None:
    """The number of input token ids: ``len(vocab)`` for ``"lm"``, :data:`BYTE_VOCAB`
    for ``"text"``, None for images."""
    if self.kind == "lm":
      return len(self.vocab) if self.vocab is not None else self.num_classes
    if self.kind == "text":
      return BYTE_VOCAB
    return None


class _TfdsInfo(NamedTuple):
  test_split: str
  num_classes: int
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augment_crop: int
  augment_flip: bool
  resize: int | None = None


# Per-channel statistics of the training splits (ImageNet: the usual torchvision ones).
TFDS_DATASETS: dict[str, _TfdsInfo] = {
    "mnist": _TfdsInfo("test", 10, (28, 28, 1), (0.1307,), (0.3081,), 0, False),
    "fashion_mnist": _TfdsInfo("test", 10, (28, 28, 1), (0.2860,), (0.3530,), 0, False),
    "cifar10": _TfdsInfo(
        "test", 10, (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4, True
    ),
    "cifar100": _TfdsInfo(
        "test", 100, (32, 32, 3), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 4, True
    ),
    "svhn_cropped": _TfdsInfo(
        "test", 10, (32, 32, 3), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 4, False
    ),
    "imagenet2012": _TfdsInfo(
        "validation",
        1000,
        (224, 224, 3),
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        0,
        True,
        IMAGENET_RESIZE,
    ),
}
"""The TensorFlow Datasets names :func:`load` knows, with their test split and defaults."""


class _TfdsTextInfo(NamedTuple):
  kind: str
  test_split: str
  text_key: str
  num_classes: int = 0  # "text": the number of labels ("lm": the vocabulary's size)
  module: str | None = None  # a module to import so that tfds registers the builder


TFDS_TEXT_DATASETS: dict[str, _TfdsTextInfo] = {
    # Three splits of one record each, holding the whole split's text.
    "tiny_shakespeare": _TfdsTextInfo("lm", "validation", "text"),
    # The test split's labels are -1 (hidden): the validation split is the test split.
    "glue/sst2": _TfdsTextInfo(
        "text", "validation", "sentence", 2, module="tensorflow_datasets.text.glue"
    ),
}
"""The TensorFlow Datasets text data sets :func:`load` knows, with their kind and test split."""


def load(
    name: str,
    *,
    data_dir: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.1,
    context: int = 64,
    max_length: int = 128,
) -> tuple[Source, Source, DataSpec]:
  """Loads a data set's training and test splits.

  Args:
    name: ``"digits"``; a TensorFlow Datasets name from :data:`TFDS_DATASETS`
      (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``svhn_cropped``,
      ``imagenet2012``; test split: ``test``, for ImageNet ``validation``); or
      ``"npz:PATH"``, a local ``.npz`` file with ``x`` (``[n, H, W]`` or
      ``[n, H, W, C]``) and ``y`` and optionally ``x_test`` and ``y_test``; a
      relative ``PATH`` is looked up under ``data_dir`` when that is given. Text
      (see :data:`TFDS_TEXT_DATASETS`): ``"tiny_shakespeare"`` (character language
      modelling; test split ``validation``) or ``"text:PATH"``, a local UTF-8 text
      file whose last ``test_fraction`` of characters (by position) is the test
      split; ``"glue/sst2"`` (sentence classification; test split ``validation``)
      or ``"tsv:PATH"``, a local file of ``sentence<TAB>label`` lines (an optional
      first line ``sentence<TAB>label`` is a header) split at random.
    data_dir: the TensorFlow Datasets directory (None: tfds's default,
      ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``), or the directory of
      relative ``.npz``, text and ``.tsv`` paths. Nothing is downloaded: a tfds data
      set must have been prepared in the ``array_record`` format.
    seed: the seed of the permutation that picks the test examples when the data
      set has no test split (digits, ``.npz`` without ``x_test``, ``tsv:``).
    test_fraction: the fraction of the examples held out for testing then, and
      the fraction of a ``text:`` file's characters held out (its end).
    context: for language modelling, the number of tokens of one example.
    max_length: for sentence classification, the number of tokens of one example
      (longer sentences are truncated, shorter ones padded with :data:`PAD_ID`).

  Returns:
    ``(train, test, spec)``: two :class:`Source` objects and the :class:`DataSpec`.
    Digits images are uint8 in 0..16 (``pixel_scale`` 16, mean 0, std 1: the model
    sees ``x / 16``); the ``.npz`` statistics are
    those of its training split. Language modelling gives :class:`TokenWindows`
    whose vocabulary (``spec.vocab``, sorted characters) is built from the whole
    text, training and test splits together (for ``tiny_shakespeare`` all three
    tfds splits), so every character has an id; sentence classification gives
    sources of tokens ``[n, max_length]`` (:func:`encode_sentences`) and labels.

  Raises:
    ValueError: for an unknown name, a bad ``test_fraction``, ``context`` or
      ``max_length``, a malformed file, or a text too short for one window.
    FileNotFoundError: for a missing local file or a tfds data set that is not
      prepared in ``data_dir`` (the message says how to prepare it).

  Example:
    >>> train, test, spec = load("digits", test_fraction=0.2)
    >>> len(train), len(test), spec.image_shape, spec.num_classes
    (1438, 359, (8, 8, 1), 10)
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "abc.txt"
    >>> _ = path.write_text("abcab" * 200)
    >>> train, test, spec = load(f"text:{path}", context=8, test_fraction=0.1)
    >>> spec.kind, spec.vocab, spec.num_classes, spec.image_shape, len(train), len(test)
    ('lm', 'abc', 3, (8,), 111, 11)
  """
  if name == "digits":
    digits = load_digits()
    x = digits.images.astype(np.uint8)[..., None]
    y = digits.target.astype(np.int32)
    train, test = _split(x, y, seed, test_fraction)
    spec = DataSpec(
        name="digits",
        num_classes=DIGITS_NUM_CLASSES,
        image_shape=(8, 8, 1),
        num_train=len(train),
        num_test=len(test),
        mean=(0.0,),
        std=(1.0,),
        pixel_scale=16.0,
    )
    return train, test, spec
  if name.startswith(NPZ_PREFIX):
    return _load_npz(name[len(NPZ_PREFIX):], data_dir, seed, test_fraction)
  if name in TFDS_DATASETS:
    return _load_tfds(name, data_dir)
  if name.startswith(TEXT_PREFIX):
    _check_length("context", context)
    return _load_text_file(name[len(TEXT_PREFIX):], data_dir, test_fraction, context)
  if name.startswith(TSV_PREFIX):
    _check_length("max_length", max_length)
    return _load_tsv(name[len(TSV_PREFIX):], data_dir, seed, test_fraction, max_length)
  if name in TFDS_TEXT_DATASETS:
    info = TFDS_TEXT_DATASETS[name]
    _check_length(*(("context", context) if info.kind == "lm" else ("max_length", max_length)))
    return _load_tfds_text(name, data_dir, context, max_length)
  known = ", ".join(
      ["digits", *TFDS_DATASETS, "npz:PATH", *TFDS_TEXT_DATASETS, "text:PATH", "tsv:PATH"]
  )
  raise ValueError(f"Unknown data set {name!r}: expected one of {known}.")


def encode_sentences(sentences: list[str], max_length: int) -> np.ndarray:
  """Byte tokens of sentences: ``[CLS, byte + BYTE_OFFSET..., PAD...]``, ``max_length`` each.

  Each sentence is encoded in UTF-8; byte ``b`` becomes the id ``b + BYTE_OFFSET``
  (so ids lie in ``[0, BYTE_VOCAB)``), after :data:`CLS_ID`; sentences longer than
  ``max_length - 1`` bytes are truncated, shorter ones padded with :data:`PAD_ID`.

  Args:
    sentences: the sentences (str, or UTF-8 bytes).
    max_length: the number of tokens per sentence (at least 1).

  Returns:
    int32 token ids ``[len(sentences), max_length]``.

  Example:
    >>> encode_sentences(["hi", "hello"], 4).tolist()
    [[1, 106, 107, 0], [1, 106, 103, 110]]
  """
  _check_length("max_length", max_length)
  out = np.full((len(sentences), max_length), PAD_ID, dtype=np.int32)
  out[:, 0] = CLS_ID
  for row, sentence in zip(out, sentences, strict=True):
    raw = sentence.encode("utf-8") if isinstance(sentence, str) else bytes(sentence)
    ids = np.frombuffer(raw[: max_length - 1], dtype=np.uint8)
    row[1 : 1 + len(ids)] = ids.astype(np.int32) + BYTE_OFFSET
  return out


def decode(ids: np.ndarray, spec: DataSpec) -> str | list[str]:
  """The text that token ids stand for: the inverse of the tokenisation of ``spec``'s kind.

  For ``"lm"`` token ``i`` is the character ``spec.vocab[i]``; for ``"text"`` the
  tokens are bytes (:func:`encode_sentences`): :data:`PAD_ID` and :data:`CLS_ID` are
  dropped and the bytes decoded as UTF-8 (a sequence truncated in the middle of a
  character ends with U+FFFD).

  Args:
    ids: token ids, ``[T]`` or a batch ``[n, T]``.
    spec: the data set's :class:`DataSpec` (of kind ``"lm"`` or ``"text"``).

  Returns:
    The text, or for a batch the list of texts.

  Raises:
    ValueError: for image data, ids of another shape or ids outside the vocabulary.

  Example:
    >>> spec = DataSpec("abc", 3, (4,), 1, 1, (0.0,), (1.0,), 1.0, kind="lm", vocab="abc")
    >>> decode(np.array([2, 0, 1, 1]), spec)
    'cabb'
    >>> decode(encode_sentences(["héllo"], 8), dataclasses.replace(spec, kind="text"))
    ['héllo']
  """
  ids = np.asarray(ids)
  if ids.ndim == 2:
    return [decode(row, spec) for row in ids]
  if ids.ndim != 1:
    raise ValueError(f"`ids` must be [T] or [n, T], got shape {ids.shape}.")
  if spec.kind == "lm":
    if spec.vocab is None:
      raise ValueError(f"{spec.name} has no vocabulary to decode with.")
    table = np.frombuffer(spec.vocab.encode("utf-32-le"), dtype=np.uint32)
    if ids.size and (ids.min() < 0 or ids.max() >= len(table)):
      raise ValueError(f"Token ids must lie in [0, {len(table)}) for {spec.name}.")
    return table[ids].astype("<u4").tobytes().decode("utf-32-le")
  if spec.kind == "text":
    if ids.size and (ids.min() < 0 or ids.max() >= BYTE_VOCAB):
      raise ValueError(f"Token ids must lie in [0, {BYTE_VOCAB}) for {spec.name}.")
    raw = ids[ids >= BYTE_OFFSET] - BYTE_OFFSET
    return raw.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
  raise ValueError(f"{spec.name} holds images, not text.")


def steps_per_epoch(num_examples: int, batch_size: int, *, drop_remainder: bool = True) -> int:
  """The number of mini-batches :func:`batches` yields in one epoch.

  ``floor(n / B)`` when the last partial batch is dropped, otherwise ``ceil(n / B)``,
  for ``n`` examples in batches of ``B``.

  Args:
    num_examples: the number of examples ``n`` in the split.
    batch_size: the number of examples per batch ``B``.
    drop_remainder: whether the last partial batch is dropped (as :func:`batches`
      does by default).

  Returns:
    The number of batches per epoch.

  Raises:
    ValueError: if ``batch_size`` is less than 1.

  Example:
    >>> steps_per_epoch(10, 4), steps_per_epoch(10, 4, drop_remainder=False)
    (2, 3)
  """
  if batch_size < 1:
    raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
  if drop_remainder:
    return num_examples // batch_size
  return -(-num_examples // batch_size)


def batches(
    source: Source,
    spec: DataSpec,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    augment: bool,
    drop_remainder: bool = True,
    start_batch: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields the shuffled, normalised (and possibly augmented) mini-batches of one epoch.

  The order is a permutation drawn from ``np.random.default_rng([seed, epoch])``;
  the augmentation of batch ``i`` (crop offsets and flips, see :class:`DataSpec`)
  is drawn from a generator seeded with ``[seed, epoch, i, 1]`` (the trailing 1
  keeps it apart from the permutation's stream). So the batches depend only on
  ``(seed, epoch)``, and ``start_batch`` resumes an epoch exactly: the batches
  before it are skipped without being read. The arguments are checked when
  :func:`batches` is called; the batches are read as the iterator is consumed.

  Text: for language modelling (``spec.kind == "lm"``) the examples are the
  source's windows (:class:`TokenWindows`), each cut at an offset ``r`` in
  ``[0, context)`` drawn from that same generator with augmentation (so training
  sees windows starting anywhere) and at ``r = 0`` without:
  ``x = tokens[s + r : s + r + context]`` and ``y`` the next ``context`` tokens,
  shifted by one. Sentence classification tokens pass through unchanged (they
  are never augmented).

  Args:
    source: the training split.
    spec: the data set's :class:`DataSpec`.
    batch_size: the number of examples per batch.
    seed: the run's seed (non-negative).
    epoch: the epoch's index (non-negative).
    augment: whether to augment (random crop / flip as ``spec`` says; for
      language modelling, random window offsets).
    drop_remainder: drop the last partial batch (every batch then has
      ``batch_size`` examples, so one compiled train step serves them all).
    start_batch: the index of the first batch to yield.

  Returns:
    An iterator over the epoch's batches ``(x, y)`` from index ``start_batch`` on
    (:func:`steps_per_epoch` batches make the whole epoch): float32 images
    ``[batch, *spec.image_shape]`` and int32 labels ``[batch]``, ``batch`` being
    ``batch_size`` (but for a last partial batch when ``drop_remainder`` is False).
    Language modelling: int32 inputs and targets ``[batch, context]``; sentence
    classification: int32 tokens ``[batch, max_length]`` and int32 labels ``[batch]``.

  Raises:
    ValueError: if ``batch_size`` is less than 1, ``start_batch`` lies outside
      ``[0, steps_per_epoch]`` or ``seed`` or ``epoch`` is negative.

  Example:
    >>> train, _, spec = load("digits")
    >>> x, y = next(batches(train, spec, batch_size=32, seed=0, epoch=0, augment=False))
    >>> x.shape, x.dtype, y.shape, y.dtype
    ((32, 8, 8, 1), dtype('float32'), (32,), dtype('int32'))
    >>> rest = batches(train, spec, batch_size=32, seed=0, epoch=0, augment=True, start_batch=48)
    >>> steps_per_epoch(len(train), 32), len(list(rest))
    (50, 2)
  """
  num_steps = steps_per_epoch(len(source), batch_size, drop_remainder=drop_remainder)
  if not 0 <= start_batch <= num_steps:
    raise ValueError(f"`start_batch` must lie in [0, {num_steps}], got {start_batch}.")
  if seed < 0 or epoch < 0:
    raise ValueError(f"`seed` and `epoch` must be non-negative, got {seed} and {epoch}.")
  order = np.random.default_rng([seed, epoch]).permutation(len(source))
  return _batches(source, spec, order, batch_size, seed, epoch, augment, start_batch, num_steps)


def eval_batches(
    source: Source, spec: DataSpec, *, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Yields the whole split in order, in batches of ``batch_size``, without augmentation.

  The last batch is padded to ``batch_size`` with zero images (label 0), so that one
  compiled evaluation step serves every batch; ``mask`` marks the real examples.
  Text is padded with zero tokens (:data:`PAD_ID`; for language modelling zero
  targets ``[context]`` too, which the mask excludes); language modelling windows
  are cut at offset 0 (see :func:`batches`), so each window counts once.

  Args:
    source: the split to evaluate on.
    spec: the data set's :class:`DataSpec`.
    batch_size: the number of examples per batch.

  Returns:
    An iterator over the ``ceil(len(source) / batch_size)`` batches ``(x, y, mask)``:
    float32 images ``[batch_size, *spec.image_shape]``, int32 labels
    ``[batch_size]`` and a bool mask ``[batch_size]``. Text: int32 tokens
    ``[batch_size, *spec.image_shape]``; for language modelling the targets are
    ``[batch_size, context]`` (the mask stays ``[batch_size]``, one per window).

  Raises:
    ValueError: if ``batch_size`` is less than 1.

  Example:
    >>> _, test, spec = load("digits")
    >>> sum(int(mask.sum()) for _, _, mask in eval_batches(test, spec, batch_size=64)) == len(test)
    True
  """
  if batch_size < 1:
    raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
  return _eval_batches(source, spec, batch_size)


# Private helpers.


def _batches(source, spec, order, batch_size, seed, epoch, augment, start_batch, num_steps):
  for i in range(start_batch, num_steps):
    x, y = source.get(order[i * batch_size : (i + 1) * batch_size])
    # The trailing 1 keeps these streams apart from the permutation's: SeedSequence
    # pads short entropy with zeros, so [seed, epoch] == [seed, epoch, 0].
    rng = np.random.default_rng([seed, epoch, i, 1]) if augment else None
    yield _finish(x, y, spec, rng)


def _eval_batches(source, spec, batch_size):
  n = len(source)
  for start in range(0, n, batch_size):
    x, y = source.get(np.arange(start, min(start + batch_size, n)))
    x, y = _finish(x, y, spec, None)
    mask = np.zeros(batch_size, dtype=bool)
    mask[: len(y)] = True
    pad = batch_size - len(y)
    if pad:
      x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
      y = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
    yield x, y, mask


def _finish(x, y, spec: DataSpec, rng: np.random.Generator | None):
  """A batch as the model sees it: images prepared, text windows cut, tokens as int32."""
  if spec.kind == "image":
    return _prepare(x, spec, rng), y
  (length,) = spec.image_shape
  x, y = np.asarray(x), np.asarray(y)
  if spec.kind == "text":
    if x.ndim != 2 or x.shape[1] != length:
      raise ValueError(f"Expected tokens [n, {length}] for {spec.name}, got {x.shape}.")
    return x.astype(np.int32, copy=False), y.astype(np.int32, copy=False)
  # Language modelling: inputs and targets [n, 2 * context - 1], cut at offset r.
  span = 2 * length - 1
  if x.ndim != 2 or x.shape != y.shape or x.shape[1] != span:
    raise ValueError(
        f"Expected windows [n, {span}] for {spec.name} (context {length}), got {x.shape} "
        f"and {y.shape}."
    )
  if rng is None:
    x, y = x[:, :length], y[:, :length]
  else:
    offsets = rng.integers(0, length, size=len(x))
    rows = np.arange(len(x))
    x = np.lib.stride_tricks.sliding_window_view(x, length, axis=1)[rows, offsets]
    y = np.lib.stride_tricks.sliding_window_view(y, length, axis=1)[rows, offsets]
  return np.ascontiguousarray(x, np.int32), np.ascontiguousarray(y, np.int32)


def _prepare(x: np.ndarray, spec: DataSpec, rng: np.random.Generator | None) -> np.ndarray:
  """Crops (and with ``rng``, augments) then normalises a batch of stored images."""
  height, width, channels = spec.image_shape
  if x.ndim != 4 or x.shape[-1] != channels:
    raise ValueError(f"Expected images [n, H, W, {channels}] for {spec.name}, got {x.shape}.")
  if x.shape[1] < height or x.shape[2] < width:
    raise ValueError(f"Images {x.shape[1:3]} are smaller than {spec.name}'s {(height, width)}.")
  if rng is None:
    top = (x.shape[1] - height) // 2
    left = (x.shape[2] - width) // 2
    x = x[:, top : top + height, left : left + width]
  else:
    pad = spec.augment_crop
    if pad:
      x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    x = _random_crop(x, height, width, rng)  # a new array: flipping in place is safe
    if spec.augment_flip:
      flip = rng.random(len(x)) < 0.5
      x[flip] = x[flip, :, ::-1]
  mean = np.asarray(spec.mean, np.float64)
  std = np.asarray(spec.std, np.float64)
  out = x.astype(np.float32)
  out *= (1.0 / (spec.pixel_scale * std)).astype(np.float32)
  out -= (mean / std).astype(np.float32)
  return out


def _random_crop(x: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
  """A uniformly random ``height`` x ``width`` window of each image."""
  n, full_height, full_width, _ = x.shape
  top = rng.integers(0, full_height - height + 1, size=n)
  left = rng.integers(0, full_width - width + 1, size=n)
  windows = np.lib.stride_tricks.sliding_window_view(x, (height, width), axis=(1, 2))
  return windows[np.arange(n), top, left].transpose(0, 2, 3, 1)


def _resize_centre_crop(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes the short side of ``image`` to ``size`` and cuts out the centred square."""
  from PIL import Image

  height, width = image.shape[:2]
  scale = size / min(height, width)
  new_height, new_width = max(size, round(height * scale)), max(size, round(width * scale))
  squeeze = image.ndim == 3 and image.shape[-1] == 1
  pil = Image.fromarray(image[..., 0] if squeeze else image)
  resized = np.asarray(pil.resize((new_width, new_height), Image.BILINEAR))
  if squeeze:
    resized = resized[..., None]
  top, left = (new_height - size) // 2, (new_width - size) // 2
  return resized[top : top + size, left : left + size]


def _split(
    x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float
) -> tuple[Dataset, Dataset]:
  """A random split fixed by ``seed``: ``round(n * test_fraction)`` examples for testing."""
  n = len(y)
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"`test_fraction` must lie in (0, 1), got {test_fraction}.")
  num_test = round(n * test_fraction)
  if not 0 < num_test < n:
    raise ValueError(f"`test_fraction` {test_fraction} leaves an empty split of {n} examples.")
  order = np.random.default_rng(seed).permutation(n)
  test, train = np.sort(order[:num_test]), np.sort(order[num_test:])
  return Dataset(x[train], y[train]), Dataset(x[test], y[test])


def _load_npz(path_str: str, data_dir: str | None, seed: int, test_fraction: float):
  path = pathlib.Path(path_str).expanduser()
  if data_dir is not None and not path.is_absolute():
    path = pathlib.Path(data_dir).expanduser() / path
  if not path.is_file():
    raise FileNotFoundError(f"No .npz file at {path} (from {NPZ_PREFIX}{path_str}).")
  with np.load(path) as arrays:
    keys = set(arrays.files)
    if not {"x", "y"} <= keys:
      raise ValueError(f"{path} must hold arrays `x` and `y`, found {sorted(keys)}.")
    if ("x_test" in keys) != ("y_test" in keys):
      raise ValueError(f"{path} must hold both `x_test` and `y_test` or neither.")
    x, y = _npz_pair(path, arrays["x"], arrays["y"], "x", "y")
    if "x_test" in keys:
      train = Dataset(x, y)
      test = Dataset(*_npz_pair(path, arrays["x_test"], arrays["y_test"], "x_test", "y_test"))
      if test.x.shape[1:] != x.shape[1:]:
        raise ValueError(f"{path}: `x_test` images {test.x.shape[1:]} differ from {x.shape[1:]}.")
    else:
      train, test = _split(x, y, seed, test_fraction)
  pixel_scale = 1.0 if np.issubdtype(x.dtype, np.floating) else 255.0
  mean, std = _channel_stats(train.x, pixel_scale)
  colour = x.shape[-1] == 3
  spec = DataSpec(
      name=path.stem,
      num_classes=int(max(train.y.max(), test.y.max())) + 1,
      image_shape=tuple(int(d) for d in x.shape[1:]),
      num_train=len(train),
      num_test=len(test),
      mean=mean,
      std=std,
      pixel_scale=pixel_scale,
      augment_crop=4 if colour else 0,
      augment_flip=colour,
  )
  return train, test, spec


def _npz_pair(path, x, y, x_key, y_key):
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or len(x) != len(y) or y.ndim != 1 or len(y) == 0:
    raise ValueError(
        f"{path}: `{x_key}` must be [n, H, W] or [n, H, W, C] and `{y_key}` [n] (n > 0), "
        f"got {x.shape} and {y.shape}."
    )
  if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
    raise ValueError(f"{path}: `{y_key}` must hold non-negative integer labels.")
  return x, y.astype(np.int32)


def _channel_stats(x: np.ndarray, pixel_scale: float) -> tuple[tuple[float, ...], ...]:
  """Per-channel mean and standard deviation on ``[0, 1]`` (std 1 for a constant channel)."""
  mean = x.mean(axis=(0, 1, 2), dtype=np.float64) / pixel_scale
  second = np.mean(np.square(x, dtype=np.float64), axis=(0, 1, 2)) / pixel_scale**2
  std = np.sqrt(np.maximum(second - mean**2, 0.0))
  std = np.where(std > 1e-6, std, 1.0)
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _load_tfds(name: str, data_dir: str | None):
  import tensorflow_datasets as tfds

  info = TFDS_DATASETS[name]
  sources = []
  for split in ("train", info.test_split):
    data_source = _tfds_data_source(tfds, name, split, data_dir)
    sources.append(TfdsSource(data_source, resize=info.resize))
  train, test = sources
  spec = DataSpec(
      name=name,
      num_classes=info.num_classes,
      image_shape=info.image_shape,
      num_train=len(train),
      num_test=len(test),
      mean=info.mean,
      std=info.std,
      augment_crop=info.augment_crop,
      augment_flip=info.augment_flip,
  )
  return train, test, spec


def _tfds_data_source(tfds: Any, name: str, split: str, data_dir: str | None) -> Any:
  """``tfds.data_source(name, split=split)``, or a FileNotFoundError saying how to prepare it.

  What tfds logs while it looks (absl warnings such as "has no dataset_info.json") is shown
  when the data set opens and dropped when it does not: the error then says it all.
  """
  absl_logger = logging.getLogger("absl")
  held: list[logging.LogRecord] = []

  def hold(record: logging.LogRecord) -> bool:
    held.append(record)
    return False

  absl_logger.addFilter(hold)
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  # What tfds raises depends on what is missing (NotImplementedError for no
  # array_record files, KeyError for no split info, OSError, ...): all mean "not prepared".
  except (NotImplementedError, KeyError, ValueError, AssertionError, OSError) as err:
    cause = str(err).strip().splitlines()[0] if str(err).strip() else ""
    message = _not_prepared_message(name, data_dir, split)
    raise FileNotFoundError(f"{message} (tfds: {type(err).__name__}: {cause})") from err
  finally:
    absl_logger.removeFilter(hold)
  for record in held:
    absl_logger.handle(record)
  return source


def _not_prepared_message(name: str, data_dir: str | None, split: str) -> str:
  if data_dir is None:
    from tensorflow_datasets.core import constants

    where = f"the default data_dir {constants.get_default_data_dir()} (data_dir=None)"
  else:
    where = f"data_dir={data_dir}"
  manual = (
      " ImageNet cannot be downloaded automatically: put ILSVRC2012_img_train.tar and "
      "ILSVRC2012_img_val.tar in <data_dir>/downloads/manual first."
      if name == "imagenet2012"
      else ""
  )
  return (
      f"TensorFlow Datasets data set {name!r} (split {split!r}) is not prepared in the "
      f"array_record format in {where}. Prepare it once (this needs the internet, and "
      f"TensorFlow for most data sets) with "
      f"`tfds build {name} --data_dir=<data_dir> --file_format=array_record` "
      f"or `tfds.builder({name!r}, data_dir=<data_dir>).download_and_prepare("
      f"file_format='array_record')`, then pass that data_dir.{manual}"
  )


# Text.


def _check_length(what: str, value: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
    raise ValueError(f"`{what}` must be a positive integer, got {value!r}.")


def _local_file(prefix: str, path_str: str, data_dir: str | None, what: str) -> pathlib.Path:
  """The path of a local file (relative paths under ``data_dir``); FileNotFoundError if none."""
  path = pathlib.Path(path_str).expanduser()
  if data_dir is not None and not path.is_absolute():
    path = pathlib.Path(data_dir).expanduser() / path
  if not path.is_file():
    raise FileNotFoundError(f"No {what} file at {path} (from {prefix}{path_str}).")
  return path


def _read_utf8(path: pathlib.Path) -> str:
  """The file's text, character for character (no newline translation)."""
  try:
    return path.read_bytes().decode("utf-8")
  except UnicodeDecodeError as err:
    raise ValueError(f"{path} is not UTF-8 text: {err}.") from None


def _as_str(value: Any) -> str:
  """A tfds text feature (str, bytes, or a 0-d NumPy array of either) as str."""
  if isinstance(value, np.ndarray):
    value = value.item()
  if isinstance(value, bytes | np.bytes_):
    return bytes(value).decode("utf-8")
  return str(value)


def _codepoints(text: str) -> np.ndarray:
  return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _char_lm(name: str, train_text: str, test_text: str, vocab_text: str, context: int):
  """Character language modelling sources and spec; the vocabulary is ``vocab_text``'s."""
  table = np.unique(_codepoints(vocab_text))  # sorted distinct characters
  vocab = table.astype("<u4").tobytes().decode("utf-32-le")
  train = TokenWindows(np.searchsorted(table, _codepoints(train_text)).astype(np.int32), context)
  test = TokenWindows(np.searchsorted(table, _codepoints(test_text)).astype(np.int32), context)
  for split, text, source in (("training", train_text, train), ("test", test_text, test)):
    if len(source) == 0:
      raise ValueError(
          f"The {split} text of {name} ({len(text)} characters) is too short for one window "
          f"of context {context} (it needs at least {2 * context + 1} characters)."
      )
  spec = DataSpec(
      name=name,
      num_classes=len(vocab),
      image_shape=(context,),
      num_train=len(train),
      num_test=len(test),
      mean=(0.0,),
      std=(1.0,),
      pixel_scale=1.0,
      kind="lm",
      vocab=vocab,
  )
  return train, test, spec


def _text_spec(name: str, train: Source, test: Source, num_classes: int, max_length: int):
  return DataSpec(
      name=name,
      num_classes=num_classes,
      image_shape=(max_length,),
      num_train=len(train),
      num_test=len(test),
      mean=(0.0,),
      std=(1.0,),
      pixel_scale=1.0,
      kind="text",
  )


def _load_text_file(path_str: str, data_dir: str | None, test_fraction: float, context: int):
  path = _local_file(TEXT_PREFIX, path_str, data_dir, "text")
  text = _read_utf8(path)
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"`test_fraction` must lie in (0, 1), got {test_fraction}.")
  num_test = round(len(text) * test_fraction)
  if not 0 < num_test < len(text):
    raise ValueError(
        f"`test_fraction` {test_fraction} leaves an empty split of {len(text)} characters."
    )
  cut = len(text) - num_test
  return _char_lm(path.stem, text[:cut], text[cut:], text, context)


def _load_tsv(path_str: str, data_dir: str | None, seed: int, test_fraction: float,
              max_length: int):
  path = _local_file(TSV_PREFIX, path_str, data_dir, ".tsv")
  lines = _read_utf8(path).splitlines()
  if lines and lines[0].strip().lower() == "sentence\tlabel":
    lines = lines[1:]
  sentences, labels = [], []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    sentence, tab, label = line.rpartition("\t")
    try:
      if not tab:
        raise ValueError
      labels.append(int(label))
    except ValueError:
      raise ValueError(
          f"{path}, line {number}: expected `sentence<TAB>label` with an integer label, "
          f"got {line[:80]!r}."
      ) from None
    sentences.append(sentence)
  if not labels or min(labels) < 0:
    raise ValueError(f"{path} must hold at least one line and non-negative integer labels.")
  x = encode_sentences(sentences, max_length)
  train, test = _split(x, np.asarray(labels, np.int32), seed, test_fraction)
  return train, test, _text_spec(path.stem, train, test, max(labels) + 1, max_length)


def _load_tfds_text(name: str, data_dir: str | None, context: int, max_length: int):
  import importlib

  import tensorflow_datasets as tfds

  info = TFDS_TEXT_DATASETS[name]
  if info.module is not None:
    # Some builders (GLUE) register themselves only once their module is imported.
    try:
      importlib.import_module(info.module)
    except ImportError:
      pass  # a prepared data set can still be read from its files
  if info.kind == "text":
    train, test = (
        TfdsTextSource(_tfds_data_source(tfds, name, split, data_dir), max_length, info.text_key)
        for split in ("train", info.test_split)
    )
    return train, test, _text_spec(name, train, test, info.num_classes, max_length)
  # Language modelling: each split is one record holding its whole text (joined if more).
  texts = {}
  for split in ("train", "validation", "test"):
    data_source = _tfds_data_source(tfds, name, split, data_dir)
    records = data_source.__getitems__(list(range(len(data_source))))
    texts[split] = "".join(_as_str(r[info.text_key]) for r in records)
  vocab_text = "".join(texts.values())
  return _char_lm(name, texts["train"], texts[info.test_split], vocab_text, context)
