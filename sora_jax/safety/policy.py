"""Prompt safety: refuse a prompt in one of Sora's stated categories before anything is generated.

Categories (OpenAI's Sora usage policies): sexual content, graphic violence, hate, real public
figures, pre-existing intellectual property. A prompt is refused when either check fires:

1. **Terms.** Each category's terms (a JSON policy file, `default_policy.json` unless the user
   gives one) are matched as whole words or word sequences of the prompt after `normalize`, which
   undoes trivial evasion: Unicode look-alikes and accents, case, leetspeak (`p0rn`, `$ex`),
   separators inside a word (`n.u.d.e`, `nu-de`), letters spaced apart (`n u d e`) and stretched
   letters (`nuuude`).
2. **Meaning.** The MiniLM sentence embedding of the prompt (the pretrained text encoder the DiT
   uses) against each category's descriptions: a cosine similarity at or above the policy's
   threshold refuses. This catches paraphrases no term list holds.

`Policy.check(prompts)` returns None or a `Refusal` (category, reason) per prompt. Commands call
`enforce(prompts)` before generating or writing anything (through `output_flags`, whose
`--allow_unsafe_prompts`, research use, turns it off), and record what it returned in each
sidecar.
"""

import collections
import dataclasses
import functools
import hashlib
import importlib.resources
import json
import pathlib
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

CATEGORIES = ("sexual", "violent", "hateful", "public_figures", "intellectual_property")

# Leetspeak and look-alike symbols inside words.
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                       "@": "a", "$": "s", "!": "i", "|": "l", "+": "t"})  # fmt: skip
# Cyrillic and Greek letters that look Latin (NFKD leaves them be).
_CONFUSABLES = str.maketrans({"а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y",
                              "х": "x", "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "к": "k",
                              "м": "m", "т": "t", "в": "b", "н": "h", "α": "a", "ο": "o",
                              "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ρ": "p", "τ": "t",
                              "υ": "u", "χ": "x"})  # fmt: skip
_IN_WORD_SEPARATORS = re.compile(r"(?<=\w)[.\-_*'’`~^](?=\w)")


@dataclasses.dataclass(frozen=True)
class Refusal:
    category: str
    reason: str

    def __str__(self) -> str:
        return f"prompt refused by the safety policy: {self.category} ({self.reason})"


def normalize(text: str) -> list[str]:
    """The words of `text` with trivial evasion undone (see the module docstring)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.translate(_CONFUSABLES)
    text = _IN_WORD_SEPARATORS.sub("", text)
    words = []
    for raw in text.split():
        raw = raw.rstrip("!?.,;:")  # sentence punctuation, not leetspeak
        # Leetspeak only in words with a letter, so "3 circles" keeps its number.
        word = raw.translate(_LEET) if re.search(r"[a-z]", raw) else raw
        words += re.findall(r"[a-z0-9]+", word)
    return _join_spelled_out(words)


def _join_spelled_out(words: list[str]) -> list[str]:
    """Runs of three or more one-letter words ("n u d e") become one word; a leading "a" or "i"
    of a longer run stays the article or pronoun it most likely is ("a n u d e")."""
    out, run = [], []
    for word in [*words, ""]:
        if len(word) == 1 and word.isalpha():
            run.append(word)
            continue
        if len(run) >= 4 and run[0] in "ai":
            out.append(run.pop(0))
        out += ["".join(run)] if len(run) >= 3 else run
        run = []
        if word:
            out.append(word)
    return out


def _squeeze(word: str) -> tuple[str, int]:
    """(repeated letters collapsed, length): "nuuude" -> ("nude", 6), "kill" -> ("kil", 4). A
    word matches a term word with the same collapsed form and at least its length, since
    stretching only adds letters ("xxx" is not matched by "x")."""
    return re.sub(r"(.)\1+", r"\1", word), len(word)


@dataclasses.dataclass(frozen=True)
class Policy:
    """Term lists and category descriptions per category, and the similarity threshold."""

    terms: dict  # category -> tuple of (term, its normalised words as `_squeeze` pairs)
    descriptions: dict  # category -> tuple of descriptions
    threshold: float
    sha256: str  # of the policy file, recorded in sidecars

    @classmethod
    def load(cls, path: str | pathlib.Path | None = None) -> "Policy":
        if path is None:
            raw = importlib.resources.files("sora_jax.safety").joinpath("default_policy.json")
            data = raw.read_bytes()
        else:
            data = pathlib.Path(path).read_bytes()
        try:
            spec = json.loads(data)
            categories = spec["categories"]
            threshold = float(spec["threshold"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"bad safety policy {path or 'default'}: {e}") from e
        unknown = sorted(set(categories) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"unknown policy categories {unknown}; expected {CATEGORIES}")
        terms = {}
        for name, entry in categories.items():
            keys = []
            for term in entry.get("terms", ()):
                words = normalize(term)
                if not words:
                    raise ValueError(
                        f"bad safety policy {path or 'default'}: term {term!r} has no words once "
                        "normalised (it would match every prompt)"
                    )
                keys.append((term, tuple(_squeeze(w) for w in words)))
                if len(words) > 1:  # also written as one word: "#taylorswift", "h e i l h i t ..."
                    keys.append((term, (_squeeze("".join(words)),)))
            terms[name] = tuple(keys)
        descriptions = {
            name: tuple(entry.get("descriptions", ())) for name, entry in categories.items()
        }
        return cls(terms, descriptions, threshold, hashlib.sha256(data).hexdigest())

    @functools.cached_property
    def _terms_by_first_word(self) -> dict:
        """collapsed first word -> [(rank in the policy, category, term, key)]."""
        index = collections.defaultdict(list)
        terms = ((c, t, k) for c, terms in self.terms.items() for t, k in terms)
        for rank, (category, term, key) in enumerate(terms):
            index[key[0][0]].append((rank, category, term, key))
        return index

    def match_terms(self, prompt: str) -> Refusal | None:
        """The policy's first term (in file order) that the prompt's words contain."""
        words = [_squeeze(w) for w in normalize(prompt)]
        found = []
        for at, (word, _) in enumerate(words):
            for rank, category, term, key in self._terms_by_first_word.get(word, ()):
                window = words[at : at + len(key)]
                if len(window) == len(key) and all(
                    w == k and n >= m for (w, n), (k, m) in zip(window, key, strict=True)
                ):
                    found.append((rank, category, term))
        if not found:
            return None
        _, category, term = min(found)
        return Refusal(category, f"matched the term {term!r}")

    def match_meaning(self, prompts: list[str]) -> list[Refusal | None]:
        """Per prompt: the category whose description is most similar, if >= threshold."""
        names = [n for n in self.descriptions for _ in self.descriptions[n]]
        if not names:
            return [None] * len(prompts)
        embed = _sentence_embedder()
        anchors = embed(tuple(d for n in self.descriptions for d in self.descriptions[n]))
        similarity = embed(tuple(prompts)) @ anchors.T
        out = []
        for row in similarity:
            best = int(np.argmax(row))
            hit = row[best] >= self.threshold
            reason = f"similarity {row[best]:.2f} to {names[best]!r} content >= {self.threshold}"
            out.append(Refusal(names[best], reason) if hit else None)
        return out

    def check(self, prompts: list[str]) -> list[Refusal | None]:
        """Per prompt: None (allowed) or why it is refused."""
        by_terms = [self.match_terms(p) for p in prompts]
        unsure = [i for i, refusal in enumerate(by_terms) if refusal is None]
        for i, refusal in zip(
            unsure, self.match_meaning([prompts[i] for i in unsure]), strict=True
        ):
            by_terms[i] = refusal
        return by_terms


@functools.cache
def _sentence_embedder():
    """texts -> unit MiniLM sentence embeddings [n, 384] (numpy).

    Each text is embedded alone, padded only to its own length rounded up to 16 tokens, and the
    last 4096 are memoised: a batch's matmuls round differently with its shape, so a prompt's
    verdict would otherwise depend on the prompts checked alongside it. (`CachedEmbedder` gets
    the same independence from fixed chunks of 8 at the full 128 tokens: for 148 prompts of
    ~5 words, 2.8 s against 0.7 s here.)
    """
    import jax

    from sora_jax.text import encoders, minilm

    encoder = encoders.make_text_encoder({"name": "minilm", "max_length": 128})
    apply = jax.jit(
        lambda ids, mask: minilm.mean_pool(
            encoder.module.apply({"params": encoder.params}, ids, mask), mask
        )
    )

    @functools.lru_cache(maxsize=4096)
    def embed_one(text: str) -> np.ndarray:
        tokens = encoder.tokenizer([text])
        # Padding is masked out of attention and pooling: cut it after the text (to a multiple
        # of 16 tokens, so few shapes compile).
        length = min(-(-max(int(tokens["mask"].sum()), 1) // 16) * 16, tokens["ids"].shape[1])
        return np.asarray(apply(tokens["ids"][:, :length], tokens["mask"][:, :length]))[0]

    def embed(texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("the sentence embedder takes a list of prompts, not a single string")
        if not texts:
            return np.zeros((0, encoder.width), np.float32)
        return np.stack([embed_one(text) for text in texts])

    return embed


def enforce(prompts: list[str], *, allow_unsafe: bool = False, policy_file=None) -> dict:
    """Raises ValueError naming the first refused prompt's category, unless `allow_unsafe`;
    returns the sidecar record of what was enforced. `policy_file`: None for the default."""
    if allow_unsafe:
        return {"prompt_policy": "disabled (--allow_unsafe_prompts)"}
    policy = Policy.load(policy_file)
    for prompt, refusal in zip(prompts, policy.check(list(prompts)), strict=True):
        if refusal is not None:
            raise ValueError(f"{refusal}: {prompt!r}")
    return {"prompt_policy": "enforced", "policy_sha256": policy.sha256}
