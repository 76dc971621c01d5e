"""The captioner's own tokenizer: a byte-level BPE trained on the training captions.

Byte-level, so any text round-trips (nothing is out of vocabulary), with merges learned from the
captions the captioner is trained to write, so a Shapes World word is one token or two. Training
is deterministic (same captions, same vocabulary); the trained tokenizer is a JSON string kept
next to the captioner's weights.
"""

from collections.abc import Iterable, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

PAD, BOS, EOS = 0, 1, 2
_SPECIALS = ("<pad>", "<bos>", "<eos>")


class CaptionTokenizer:
    def __init__(self, tokenizer: tokenizers.Tokenizer, max_length: int):
        for i, special in enumerate(_SPECIALS):
            if tokenizer.token_to_id(special) != i:
                raise ValueError(f"tokenizer must map {special} to {i}")
        self.tokenizer, self.max_length = tokenizer, max_length

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, max_length: int) -> "CaptionTokenizer":
        tokenizer = tokenizers.Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(_SPECIALS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer, max_length)

    @classmethod
    def from_json(cls, text: str, max_length: int) -> "CaptionTokenizer":
        return cls(tokenizers.Tokenizer.from_str(text), max_length)

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """int32 [B, max_length]: BOS, the caption's tokens, EOS, then PAD. Raises ValueError
        for a caption too long to fit (a truncated caption would teach the model to stop)."""
        ids = np.full((len(texts), self.max_length), PAD, np.int32)
        for row, encoding in enumerate(self.tokenizer.encode_batch(list(texts))):
            tokens = [BOS, *encoding.ids, EOS]
            if len(tokens) > self.max_length:
                raise ValueError(
                    f"caption of {len(tokens)} tokens does not fit max_length "
                    f"{self.max_length}: {texts[row][:80]!r}..."
                )
            ids[row, : len(tokens)] = tokens
        return ids

    def decode(self, ids_BxL: np.ndarray) -> list[str]:
        """Token rows (with or without BOS) -> text, stopping at the first EOS."""
        texts = []
        for row in np.asarray(ids_BxL).tolist():
            row = row[1:] if row and row[0] == BOS else row
            row = row[: row.index(EOS)] if EOS in row else row
            texts.append(self.tokenizer.decode([t for t in row if t > EOS]).strip())
        return texts
