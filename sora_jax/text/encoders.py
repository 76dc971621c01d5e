"""Picks the text encoder from `config.model.text` and caches caption embeddings of a frozen one.

    text = ml_collections.ConfigDict(dict(name="minilm", max_length=32))   # pretrained, frozen
    text = ml_collections.ConfigDict(dict(name="small", max_length=32, width=256, depth=4, heads=4))

`make_text_encoder` returns the tokenizer, the linen module and, for MiniLM, its pretrained params.
A frozen encoder's output depends only on the caption string, so `CachedEmbedder` computes it once
per distinct caption on the host: Shapes World repeats captions constantly, and the DiT train
step then never runs (or holds the weights of) the text encoder at all.
"""

import collections
import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from sora_jax.text import minilm
from sora_jax.text.small import SmallTextEncoder
from sora_jax.text.tokenizer import Tokenizer

NAMES = ("minilm", "small")


@dataclasses.dataclass(frozen=True, eq=False)
class TextEncoder:
    """What a text encoder is: `module.apply({"params": p}, ids_BxL, mask_BxL) -> [B, L, width]`.

    `params` is the pretrained tree for MiniLM and None for the small encoder (init it with the
    DiT). `frozen` says whether the trainer should leave the text weights alone.
    """

    name: str
    tokenizer: Tokenizer
    module: nn.Module
    frozen: bool
    width: int
    params: Any = None


def make_text_encoder(text_config: Any) -> TextEncoder:
    """Builds the encoder named by `text_config.name` ("minilm" | "small").

    Fields (a ConfigDict or dict): `max_length` (default 32); for "small" also `width` (256),
    `depth` (4), `heads` (4), `mlp_ratio` (4.0); `frozen` (default True for minilm, False for
    small). Fields of the other encoder are ignored, so one config can switch with `name` alone.
    """
    name = text_config.get("name", "minilm")
    max_length = int(text_config.get("max_length", 32))
    tokenizer = Tokenizer(max_length)
    if name == "minilm":
        module = minilm.MiniLM()
        if max_length > module.max_positions:
            raise ValueError(
                f"MiniLM has {module.max_positions} positions, max_length={max_length}"
            )
        return TextEncoder(
            name=name,
            tokenizer=tokenizer,
            module=module,
            frozen=bool(text_config.get("frozen", True)),
            width=module.width,
            params=minilm.load_params(),
        )
    if name == "small":
        module = SmallTextEncoder(
            # Rounded up so the `vocab` axis divides the `tensor` mesh degree.
            vocab_size=-(-tokenizer.vocab_size // 128) * 128,
            max_length=max_length,
            width=int(text_config.get("width", 256)),
            depth=int(text_config.get("depth", 4)),
            heads=int(text_config.get("heads", 4)),
            mlp_ratio=float(text_config.get("mlp_ratio", 4.0)),
        )
        return TextEncoder(
            name=name,
            tokenizer=tokenizer,
            module=module,
            frozen=bool(text_config.get("frozen", False)),
            width=module.width,
        )
    raise ValueError(f"unknown text encoder {name!r}; expected one of {NAMES}")


class CachedEmbedder:
    """`embedder(texts) -> (states float32[B, L, D], mask bool[B, L])`, numpy, memoised per caption.

    Only for frozen encoders with fixed params. Captions not yet seen are encoded in batches of
    `CHUNK` rows, the last padded by repeating its first row: one shape, so one compilation, and
    a caption's states are the same bits whichever captions it was encoded with (measured with XLA
    on CPU: a matmul's rounding changes with its shape, not with a row's place or batch-mates; XLA
    does not promise it), so resume stays bit-exact.
    The cache keeps the `max_entries` most recently used captions, each as its unpadded states
    (MiniLM at ~13 tokens: ~20 KB a caption). Not thread-safe: use one per data-loading thread.
    """

    CHUNK = 8

    def __init__(self, encoder: TextEncoder, max_entries: int = 4096):
        if not encoder.frozen or encoder.params is None:
            raise ValueError("CachedEmbedder needs a frozen encoder with fixed params")
        if max_entries < 1:
            raise ValueError(f"max_entries must be positive, got {max_entries}")
        self.tokenizer = encoder.tokenizer
        self.width = encoder.width
        self.max_entries = max_entries
        self._params = encoder.params
        self._apply = jax.jit(
            lambda params, ids, mask: encoder.module.apply({"params": params}, ids, mask)
        )
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self.num_encoded = 0  # captions actually run through the encoder

    def __len__(self) -> int:
        return len(self._cache)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            raise TypeError("CachedEmbedder takes a list of prompts, not a single string")
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            self._encode(missing)
        length = self.tokenizer.max_length
        states_BxLxD = np.zeros((len(texts), length, self.width), np.float32)
        mask_BxL = np.zeros((len(texts), length), bool)
        for b, text in enumerate(texts):
            self._cache.move_to_end(text)
            s_NxD = self._cache[text]
            states_BxLxD[b, : len(s_NxD)] = s_NxD
            mask_BxL[b, : len(s_NxD)] = True  # padding is always on the right
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return states_BxLxD, mask_BxL

    def _encode(self, texts: list[str]) -> None:
        tok = self.tokenizer(texts)
        n = len(texts)
        for start in range(0, n, self.CHUNK):
            # Every call has the same shape: the last chunk is padded by repeating its first row.
            rows = np.arange(start, start + self.CHUNK)
            rows[rows >= n] = start
            states_BxLxD = np.asarray(
                self._apply(self._params, tok["ids"][rows], tok["mask"][rows])
            )
            for b, text in enumerate(texts[start : start + self.CHUNK]):
                # A copy, not a view: a view would keep the whole padded batch alive in the cache.
                keep = tok["mask"][start + b].sum()
                self._cache[text] = np.array(states_BxLxD[b, :keep], np.float32)
        self.num_encoded += n
