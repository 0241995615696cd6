r"""Transformers on token sequences: a GPT language model and a BERT-style sequence classifier.

Both networks share one pre-LayerNorm block (:class:`TransformerBlock`): with :math:`x` the
sequence of hidden states,

.. math::

  x \leftarrow x + \mathrm{drop}(\mathrm{MHA}(\mathrm{LN}_1(x), M)), \qquad
  x \leftarrow x + \mathrm{drop}(W_2\, \mathrm{gelu}(W_1 \mathrm{LN}_2(x) + b_1) + b_2),

where the attention mask :math:`M` is causal for :class:`GPT` and hides the padding for
:class:`EncoderClassifier`. Both embed tokens and positions with learned tables and end in a
LayerNorm. Parameter counts (the ``params`` collection):

===============  ============================================  ======  ======  ===========
alias            network                                       vocab   labels  parameters
===============  ============================================  ======  ======  ===========
``GPTNano``      4 layers, 4 heads, width 128, context 64      65      --      809,856
``GPT2Small``    12 layers, 12 heads, width 768, context 1024  50257   --      124,439,808
``EncoderTiny``  4 layers, 4 heads, width 128, context 128     258     2       843,010
===============  ============================================  ======  ======  ===========

``GPT2Small`` with ``num_classes=50257`` has exactly the 124,439,808 parameters of OpenAI's GPT-2
small (tied embedding and output weights, biases in every ``Dense`` and LayerNorm).

Byte tokenisation of the classifier's input (the harness's text pipeline): byte ``b`` is token
``b + BYTE_OFFSET``, token :data:`PAD_ID` pads a sequence, :data:`CLS_ID` is put at position 0,
so the vocabulary has ``BYTE_OFFSET + 256`` = 258 ids.

References:
  Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin, *Attention Is All You
  Need*, NeurIPS 2017, https://arxiv.org/abs/1706.03762

  Radford, Wu, Child, Luan, Amodei, Sutskever, *Language Models are Unsupervised Multitask
  Learners*, OpenAI 2019 (GPT-2).

  Devlin, Chang, Lee, Toutanova, *BERT: Pre-training of Deep Bidirectional Transformers for
  Language Understanding*, NAACL 2019, https://arxiv.org/abs/1810.04805
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import check_rate, dropout

PAD_ID = 0
"""The padding token: positions holding it are never attended to by :class:`EncoderClassifier`."""

CLS_ID = 1
"""The classification token, put at position 0; :class:`EncoderClassifier` classifies from its
final representation."""

BYTE_OFFSET = 2
"""Byte ``b`` (0..255) is token ``b + BYTE_OFFSET``: ids below it are the special tokens."""

INIT_STD = 0.02
"""Standard deviation of GPT-2's normal initialisation of every weight matrix and embedding."""

LN_EPSILON = 1e-5
"""LayerNorm's variance offset, as in GPT-2 and BERT (PyTorch's default)."""


def _normal(std: float) -> nn.initializers.Initializer:
  return nn.initializers.normal(stddev=std)


def _check_shape(module: nn.Module, tokens: jax.Array) -> None:
  """Raises ValueError unless ``tokens`` is integer ``[batch, length]``, length <= context."""
  if tokens.ndim != 2:
    raise ValueError(f"tokens must have shape [batch, length], got shape {tokens.shape}.")
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}.")
  if tokens.shape[1] > module.context:
    raise ValueError(
        f"{type(module).__name__}: the input has {tokens.shape[1]} positions, more than the "
        f"context of {module.context}."
    )


def _check_sizes(module: nn.Module) -> None:
  """Raises ValueError naming the first invalid size attribute of ``module``."""
  for name in ("num_layers", "num_heads", "width", "context", "num_classes"):
    if getattr(module, name) < 1:
      raise ValueError(f"{name} must be positive, got {getattr(module, name)}.")
  if module.width % module.num_heads:
    raise ValueError(
        f"width ({module.width}) must be a multiple of num_heads ({module.num_heads})."
    )
  check_rate("dropout_rate", module.dropout_rate)


class TransformerBlock(nn.Module):
  r"""A pre-LayerNorm block: masked multi-head self-attention, then a GELU MLP, each residual.

  For hidden states :math:`x \in \mathbb{R}^{T \times d}` and :math:`H` heads of size
  :math:`d_h = d / H`, head :math:`h` computes
  :math:`\mathrm{softmax}(Q_h K_h^\top / \sqrt{d_h} + B)\, V_h` with :math:`Q, K, V` one
  ``Dense(3 d)`` of :math:`\mathrm{LN}_1(x)` and :math:`B_{qk} = 0` where ``mask[q, k]`` holds,
  :math:`-\infty` (the smallest float32) elsewhere; the heads are concatenated, projected by a
  ``Dense(d)`` and added to :math:`x`. The MLP is ``Dense(mlp_ratio * d)``, GELU (tanh form, as
  GPT-2), ``Dense(d)``, added to :math:`x`. Dropout acts on the attention probabilities and on
  both branches' outputs. The attention logits and softmax are computed in float32 whatever
  ``dtype``.

  Weights are :math:`\mathcal{N}(0, 0.02^2)` except the two output projections, whose standard
  deviation is :math:`0.02 / \sqrt{2 L}` for a network of :math:`L` blocks (GPT-2: the residual
  stream then keeps its scale at initialisation); biases start at zero.

  Attributes:
    num_heads: attention heads; they divide the width of the input.
    num_layers: the number of blocks of the network, for the output projections' initialisation.
    mlp_ratio: the MLP's hidden width over the model width.
    dropout_rate: dropout rate, applied only when ``train``.
    dtype: the computation dtype.
    param_dtype: the parameters' dtype.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> block = TransformerBlock(num_heads=2, num_layers=1)
    >>> x = jnp.ones((3, 5, 8))
    >>> mask = jnp.tril(jnp.ones((5, 5), bool))
    >>> y, variables = jax.eval_shape(block.init_with_output, jax.random.key(0), x, mask)
    >>> y.shape, sorted(variables["params"])
    ((3, 5, 8), ['attn_out', 'ln_1', 'ln_2', 'mlp_in', 'mlp_out', 'qkv'])

  References:
    Vaswani et al., *Attention Is All You Need*, NeurIPS 2017, https://arxiv.org/abs/1706.03762
    (multi-head attention).

    Radford, Wu, Child, Luan, Amodei, Sutskever, *Language Models are Unsupervised Multitask
    Learners*, OpenAI 2019 (Sec. 2.3: LayerNorm at the input of each block, the scaled
    initialisation of the residual layers).
  """

  num_heads: int
  num_layers: int
  mlp_ratio: int = 4
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, train: bool = False) -> jax.Array:
    """Maps ``x`` of shape ``[batch, length, width]`` to the same shape.

    Args:
      x: the hidden states.
      mask: booleans broadcastable to ``[batch, num_heads, length, length]``: query ``q`` may
        attend to key ``k`` where ``mask[..., q, k]`` is true.
      train: apply dropout (from the ``'dropout'`` rng when ``dropout_rate > 0``).

    Returns:
      The new hidden states, in ``dtype``.
    """
    batch, length, width = x.shape
    head_dim = width // self.num_heads
    dense = functools.partial(
        nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=_normal(INIT_STD), bias_init=nn.initializers.zeros_init(),
    )
    out_init = _normal(INIT_STD / math.sqrt(2 * self.num_layers))
    norm = functools.partial(
        nn.LayerNorm, epsilon=LN_EPSILON, dtype=self.dtype, param_dtype=self.param_dtype
    )
    drop = dropout(self.dropout_rate, train)

    qkv = dense(3 * width, name="qkv")(norm(name="ln_1")(x))
    q, k, v = (
        a.reshape(batch, length, self.num_heads, head_dim) for a in jnp.split(qkv, 3, axis=-1)
    )
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = jnp.where(mask, logits / math.sqrt(head_dim), jnp.finfo(jnp.float32).min)
    probs = drop()(jax.nn.softmax(logits, axis=-1)).astype(self.dtype)
    heads = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, length, width)
    x = x + drop()(dense(width, kernel_init=out_init, name="attn_out")(heads))

    h = nn.gelu(dense(self.mlp_ratio * width, name="mlp_in")(norm(name="ln_2")(x)))
    return x + drop()(dense(width, kernel_init=out_init, name="mlp_out")(h))


def _encode(module: nn.Module, tokens: jax.Array, mask: jax.Array, vocab: int,
            train: bool) -> tuple[jax.Array, nn.Embed]:
  """Embeddings, dropout, the blocks and the final LayerNorm, created inside ``module``.

  Returns the final hidden states ``[batch, length, width]`` and the token embedding (for weight
  tying).
  """
  embed = functools.partial(
      nn.Embed, features=module.width, dtype=module.dtype, param_dtype=module.param_dtype,
      embedding_init=_normal(INIT_STD),
  )
  wte = embed(vocab, name="wte")
  positions = jnp.arange(tokens.shape[1])
  x = wte(tokens) + embed(module.context, name="wpe")(positions)[None]
  x = dropout(module.dropout_rate, train)()(x)
  for i in range(module.num_layers):
    x = TransformerBlock(
        num_heads=module.num_heads, num_layers=module.num_layers,
        dropout_rate=module.dropout_rate, dtype=module.dtype, param_dtype=module.param_dtype,
        name=f"block_{i}",
    )(x, mask, train)
  x = nn.LayerNorm(epsilon=LN_EPSILON, dtype=module.dtype, param_dtype=module.param_dtype,
                   name="ln_f")(x)
  return x, wte


class GPT(nn.Module):
  r"""A decoder-only causal transformer language model (GPT-2's architecture).

  Tokens :math:`t_1, \dots, t_T` (:math:`T \le` ``context``) are embedded as
  :math:`x_i = E_{t_i} + P_i` (learned token and position tables), passed through dropout,
  ``num_layers`` :class:`TransformerBlock`\ s with the causal mask (position :math:`i` attends to
  positions :math:`j \le i`), a final LayerNorm, and the LM head: logits
  :math:`h_i E^\top` with ``tie_weights`` (the output layer is the token embedding, as GPT-2),
  else a separate ``Dense(num_classes)`` without bias. The logits at position :math:`i` score
  token :math:`t_{i+1}` and depend only on :math:`t_1, \dots, t_i`.

  With :math:`V` = ``num_classes``, :math:`d` = ``width``, :math:`C` = ``context`` and
  :math:`L` = ``num_layers``, the model has
  :math:`(V + C) d + L (12 d^2 + 13 d) + 2 d` parameters with tied weights (:math:`V d` more
  without): 124,439,808 for GPT-2 small (:math:`V = 50257, C = 1024, d = 768, L = 12`).

  ``dropout_rate`` defaults to 0: a line search evaluates the loss of one minibatch at several
  step sizes, and dropout noise would make those values disagree unless its key is fixed for the
  step (GPT-2 trained with 0.1; nanoGPT pretrains with 0).

  Attributes:
    num_classes: the vocabulary size :math:`V` (the harness passes the data set's number of
      classes); token ids are in ``[0, num_classes)``.
    num_layers: the number of blocks :math:`L`.
    num_heads: attention heads per block; they divide ``width``.
    width: the model width :math:`d` (``d_model``).
    context: the longest input, :math:`C` (the size of the position table); a longer input raises
      ValueError when traced.
    dropout_rate: dropout on the embeddings, the attention probabilities and the blocks' outputs,
      only when ``train``; default 0.
    tie_weights: use the token embedding as the output layer (default, as GPT-2).
    dtype: the computation dtype (bfloat16 works; LayerNorm statistics and the attention softmax
      are computed in float32 whatever it is).
    param_dtype: the parameters' dtype (float32 by default, also with a bfloat16 ``dtype``).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from models import count_params
    >>> model = GPT(num_classes=65, num_layers=2, num_heads=2, width=32, context=16)
    >>> tokens = jnp.zeros((3, 10), jnp.int32)
    >>> logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), tokens)
    >>> logits.shape, logits.dtype, sorted(variables)
    ((3, 10, 65), dtype('float32'), ['params'])
    >>> count_params(model, (1, 16)) == (65 + 16) * 32 + 2 * (12 * 32**2 + 13 * 32) + 2 * 32
    True
    >>> count_params(GPT2Small(num_classes=50257), (1, 1024))
    124439808

  References:
    Radford, Narasimhan, Salimans, Sutskever, *Improving Language Understanding by Generative
    Pre-Training*, OpenAI 2018 (GPT: the decoder-only transformer language model).

    Radford, Wu, Child, Luan, Amodei, Sutskever, *Language Models are Unsupervised Multitask
    Learners*, OpenAI 2019 (GPT-2: pre-LayerNorm blocks, final LayerNorm, the scaled
    initialisation; Table 2: the 117M (in fact 124M) model).

    Vaswani et al., *Attention Is All You Need*, NeurIPS 2017, https://arxiv.org/abs/1706.03762
  """

  num_classes: int
  num_layers: int = 4
  num_heads: int = 4
  width: int = 128
  context: int = 64
  dropout_rate: float = 0.0
  tie_weights: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self) -> None:
    _check_sizes(self)
    super().__post_init__()

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    """Maps tokens ``[batch, length]`` to next-token logits ``[batch, length, num_classes]``.

    Args:
      tokens: integer token ids in ``[0, num_classes)``, ``length <= context``.
      train: apply dropout (from the ``'dropout'`` rng when ``dropout_rate > 0``).

    Returns:
      The logits, in float32 (computed in ``dtype``; the cross-entropy over a large vocabulary
      is then taken in full precision).
    """
    _check_shape(self, tokens)
    length = tokens.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    x, wte = _encode(self, tokens, causal, self.num_classes, train)
    if self.tie_weights:
      logits = wte.attend(x)
    else:
      logits = nn.Dense(
          self.num_classes, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
          kernel_init=_normal(INIT_STD), name="lm_head",
      )(x)
    return logits.astype(jnp.float32)


class EncoderClassifier(nn.Module):
  r"""A BERT-style bidirectional transformer classifying a sequence from its ``[CLS]`` position.

  Tokens are embedded as in :class:`GPT` (learned token and position tables, dropout), then pass
  ``num_layers`` :class:`TransformerBlock`\ s in which every position attends to every position
  that is not padding (token :math:`\ne` ``pad_id``), a final LayerNorm, and the classifier
  ``Dense(num_classes)`` of the final state at position 0, where the data pipeline puts
  :data:`CLS_ID`. Padded positions never enter any other position's attention, so the logits
  do not depend on the amount of trailing padding nor on anything at padded positions.

  The harness's byte tokenisation maps byte ``b`` to ``b + BYTE_OFFSET``, with :data:`PAD_ID`
  = 0 and :data:`CLS_ID` = 1, hence the default ``vocab_size`` of ``BYTE_OFFSET + 256`` = 258.
  Ids must lie in ``[0, vocab_size)`` (an id out of range embeds as NaN). The sequence must not be
  all padding (position 0 holds the CLS token).

  With :math:`V` = ``vocab_size``, :math:`K` = ``num_classes`` and :math:`d, C, L` as in
  :class:`GPT`, the model has :math:`(V + C) d + L (12 d^2 + 13 d) + 2 d + (d + 1) K`
  parameters.

  Attributes:
    num_classes: the number of labels :math:`K`.
    num_layers: the number of blocks :math:`L`.
    num_heads: attention heads per block; they divide ``width``.
    width: the model width :math:`d`.
    context: the longest input, :math:`C` (CLS token and padding included); a longer input raises
      ValueError when traced.
    vocab_size: the number of token ids :math:`V` (default 258: the special ids and 256 bytes).
    pad_id: the padding id, never attended to.
    dropout_rate: dropout on the embeddings, the attention probabilities and the blocks' outputs,
      only when ``train``; default 0 (see :class:`GPT`; BERT trained with 0.1).
    dtype: the computation dtype (bfloat16 works).
    param_dtype: the parameters' dtype (float32 by default).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from models import count_params
    >>> model = EncoderClassifier(num_classes=2, num_layers=2, num_heads=2, width=32, context=16)
    >>> tokens = jnp.array([[CLS_ID, 72 + BYTE_OFFSET, 105 + BYTE_OFFSET, PAD_ID]])
    >>> logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), tokens)
    >>> logits.shape, logits.dtype
    ((1, 2), dtype('float32'))
    >>> blocks = 2 * (12 * 32**2 + 13 * 32)
    >>> count_params(model, (1, 16)) == (258 + 16) * 32 + blocks + 2 * 32 + (32 + 1) * 2
    True

  References:
    Devlin, Chang, Lee, Toutanova, *BERT: Pre-training of Deep Bidirectional Transformers for
    Language Understanding*, NAACL 2019, https://arxiv.org/abs/1810.04805 (the bidirectional
    encoder, classification from the ``[CLS]`` representation).

    Xiong, Yang, He, Zheng, Zheng, Xing, Zhang, Lan, Wang, Liu, *On Layer Normalization in the
    Transformer Architecture*, ICML 2020, https://arxiv.org/abs/2002.04745 (pre-LayerNorm blocks
    with a final LayerNorm).
  """

  num_classes: int
  num_layers: int = 4
  num_heads: int = 4
  width: int = 128
  context: int = 128
  vocab_size: int = BYTE_OFFSET + 256
  pad_id: int = PAD_ID
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self) -> None:
    _check_sizes(self)
    if not 0 <= self.pad_id < self.vocab_size:
      raise ValueError(f"pad_id must be in [0, vocab_size), got {self.pad_id}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    """Maps tokens ``[batch, length]`` (CLS first, then padded) to logits ``[batch, num_classes]``.

    Args:
      tokens: integer token ids in ``[0, vocab_size)``, ``length <= context``.
      train: apply dropout (from the ``'dropout'`` rng when ``dropout_rate > 0``).

    Returns:
      The logits, in float32 (computed in ``dtype``).
    """
    _check_shape(self, tokens)
    keys = (tokens != self.pad_id)[:, None, None, :]  # [batch, heads, queries, keys].
    x, _ = _encode(self, tokens, keys, self.vocab_size, train)
    logits = nn.Dense(
        self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=_normal(INIT_STD), bias_init=nn.initializers.zeros_init(), name="head",
    )(x[:, 0])
    return logits.astype(jnp.float32)


GPTNano = functools.partial(GPT, num_layers=4, num_heads=4, width=128, context=64)
"""The CPU-sized character model: 4 layers, 4 heads, width 128, context 64 (809,856 parameters
for a vocabulary of 65)."""

GPT2Small = functools.partial(GPT, num_layers=12, num_heads=12, width=768, context=1024)
"""GPT-2 small: 12 layers, 12 heads, width 768, context 1024; 124,439,808 parameters for
``num_classes=50257`` (GPT-2's vocabulary), tied weights."""

EncoderTiny = functools.partial(
    EncoderClassifier, num_layers=4, num_heads=4, width=128, context=128
)
"""A small byte-level classifier: 4 layers, 4 heads, width 128, context 128 (843,010 parameters
for 2 classes)."""
