"""The captioner without flags: model from config, loss, beam search, loading a trained one.

A `train-captioner` workdir holds Orbax checkpoints of the training state and `tokenizer.json`;
a captioner bundle (`sora_jax.bundle`, kind "captioner") holds the params as safetensors, the
tokenizer and the config. `load` reads either.
"""

import dataclasses
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sora_jax import bundle, checkpoints, config_lib, sharding, train_lib
from sora_jax.caption_tokenizer import BOS, EOS, PAD, CaptionTokenizer
from sora_jax.data.shapes_world import vocab
from sora_jax.models.captioner import Captioner

TOKENIZER_FILE = "tokenizer.json"
PARAMS = "captioner"
KIND = "captioner"
# GNMT length normalisation of finished beams' log-probabilities (Wu et al. 2016).
_LENGTH_PENALTY = 0.6


# config.model fields added after captioners were first trained, with the value their
# absence meant (such a checkpoint still loads and resumes).
_MODEL_DEFAULTS = {"frame_differences": False, "silhouettes": False}


def model_fields(model) -> dict:
    """config.model (a ConfigDict or a saved config's dict) as the fields a captioner is built
    from, older configs' missing fields filled in."""
    return config_lib.with_later_fields(model, _MODEL_DEFAULTS)


def make_model(model: ml_collections.ConfigDict, vocab_size: int) -> Captioner:
    fields = model_fields(model)
    return Captioner(
        vocab_size=vocab_size,
        max_length=fields["max_length"],
        width=fields["width"],
        encoder_depth=fields["encoder_depth"],
        decoder_depth=fields["decoder_depth"],
        heads=fields["heads"],
        patch=fields["patch"],
        frame_differences=fields["frame_differences"],
        silhouettes=fields["silhouettes"],
    )


def to_model_input(video_uint8: np.ndarray | jax.Array) -> jax.Array:
    return jnp.asarray(video_uint8, jnp.float32) / 127.5 - 1.0


def init_params(model: Captioner, rng: jax.Array, frames: int, height: int, width: int):
    video = jnp.zeros((1, frames, height, width, 3))
    ids = jnp.zeros((1, model.max_length - 1), jnp.int32)
    return model.init(rng, video, ids)["params"]


def word_token_ids(tokenizer: CaptionTokenizer, words) -> np.ndarray:
    """The token id of each word as captions write it mid-sentence (" red" after "a").
    Raises ValueError if a word is not one token in this tokenizer."""
    words = list(words)
    rows = tokenizer.encode([f"a {word}" for word in words])
    if not np.all(rows[:, 3] == EOS):
        raise ValueError(f"not every one of {list(words)} is one token")
    return rows[:, 2]


def color_token_ids(tokenizer: CaptionTokenizer) -> np.ndarray:
    """`word_token_ids` of the Shapes World colours (colour-token swapping needs them)."""
    return word_token_ids(tokenizer, vocab.COLORS)


def swap_color_tokens(ids_BxL, color_ids, prob: float, rng: jax.Array) -> jax.Array:
    """Replaces each colour token of `ids_BxL` with probability `prob` by a uniformly drawn
    colour token (possibly the same one); every other token is kept."""
    color_ids = jnp.asarray(color_ids)
    is_color = jnp.isin(ids_BxL, color_ids)
    swap_rng, pick_rng = jax.random.split(rng)
    swap = is_color & jax.random.bernoulli(swap_rng, prob, ids_BxL.shape)
    drawn = color_ids[jax.random.randint(pick_rng, ids_BxL.shape, 0, len(color_ids))]
    return jnp.where(swap, drawn, ids_BxL)


def make_loss_fn(model: Captioner, color_ids=None, input_color_swap: float = 0.0):
    """Teacher-forced next-token cross entropy over the caption's tokens (EOS included).

    With `input_color_swap` = p > 0, each colour token of the decoder's *input* (never its
    targets) is redrawn with probability p from all colours (so changed with probability 7p/8):
    a colour word then says nothing reliable about the shape word after it, so the shape must
    be read from the video. Without it the decoder learns that a held-out pair's colour is never
    followed by its shape and writes a training pair's shape instead (issue #8: held-out shape
    14%).
    """
    if not 0.0 <= input_color_swap <= 1.0:
        raise ValueError(f"input_color_swap is a rate in [0, 1], got {input_color_swap}")
    if input_color_swap and color_ids is None:
        raise ValueError("input_color_swap needs the colour token ids")

    def loss_fn(params, batch, rng, step):
        del step
        ids = batch["ids"]
        inputs = ids[:, :-1]
        if input_color_swap:
            inputs = swap_color_tokens(inputs, color_ids, input_color_swap, rng)
        logits = model.apply({"params": params}, to_model_input(batch["video"]), inputs)
        targets, weights = ids[:, 1:], (ids[:, 1:] != PAD).astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        loss = jnp.sum(losses * weights) / jnp.sum(weights)
        correct = (logits.argmax(-1) == targets).astype(jnp.float32)
        return loss, {"token_accuracy": jnp.sum(correct * weights) / jnp.sum(weights)}

    return loss_fn


@functools.partial(jax.jit, static_argnames=("model", "beam_size"))
def beam_search(model: Captioner, params, video_BxTxHxWx3, beam_size: int) -> jax.Array:
    """Token ids [B, max_length] (BOS first) of the most likely caption under beam search;
    `beam_size=1` is greedy decoding. Finished beams are ranked by length-normalised
    log-probability."""
    b, k, length = video_BxTxHxWx3.shape[0], beam_size, model.max_length
    variables = {"params": params}
    cross = model.apply(variables, to_model_input(video_BxTxHxWx3), method=Captioner.cross_kv)
    # Every beam of a video reads the same video: repeat its keys/values K times.
    cross = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), cross)
    caches = model.apply(variables, b * k, method=Captioner.empty_caches)
    ids = jnp.full((b, k, length), PAD, jnp.int32).at[:, :, 0].set(BOS)
    # Only the first beam is live at the start, so the K beams do not start as K copies.
    score = jnp.tile(jnp.asarray([0.0] + [-jnp.inf] * (k - 1)), (b, 1))
    done = jnp.zeros((b, k), bool)
    lengths = jnp.zeros((b, k), jnp.int32)

    def body(i, carry):
        ids, score, done, lengths, caches = carry
        logits, caches = model.apply(
            variables, ids[:, :, i].reshape(b * k, 1), i, cross, caches, method=Captioner.step
        )
        logp = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(b, k, -1)
        # A finished beam only extends with PAD, at no cost.
        vocab = logp.shape[-1]
        pad_only = jnp.where(jnp.arange(vocab) == PAD, 0.0, -jnp.inf)
        logp = jnp.where(done[..., None], pad_only, logp)
        candidates = (score[..., None] + logp).reshape(b, k * vocab)
        score, flat = jax.lax.top_k(candidates, k)
        parent, token = flat // vocab, flat % vocab
        ids = jnp.take_along_axis(ids, parent[..., None], axis=1).at[:, :, i + 1].set(token)
        was_done = jnp.take_along_axis(done, parent, axis=1)
        lengths = jnp.take_along_axis(lengths, parent, axis=1) + (~was_done)
        done = was_done | (token == EOS)
        rows = (jnp.arange(b)[:, None] * k + parent).reshape(-1)
        caches = jax.tree.map(lambda c: c[rows], caches)
        return ids, score, done, lengths, caches

    ids, score, done, lengths, _ = jax.lax.fori_loop(
        0, length - 1, body, (ids, score, done, lengths, caches)
    )
    ranked = jnp.where(done, score / jnp.maximum(lengths, 1) ** _LENGTH_PENALTY, score - 1e9)
    best = ranked.argmax(axis=1)
    return jnp.take_along_axis(ids, best[:, None, None], axis=1)[:, 0]


@dataclasses.dataclass(frozen=True)
class TrainedCaptioner:
    model: Captioner
    params: dict
    tokenizer: CaptionTokenizer
    config: ml_collections.ConfigDict
    step: int

    def caption(self, videos_BxTxHxWx3: np.ndarray, beam_size: int = 1) -> list[str]:
        """Detailed captions of uint8 videos of one shape."""
        ids = beam_search(self.model, self.params, jnp.asarray(videos_BxTxHxWx3), beam_size)
        return self.tokenizer.decode(np.asarray(ids))


def abstract_train_state(config: ml_collections.ConfigDict, model: Captioner):
    optimizer = train_lib.make_optimizer(config.optimizer, config.total_steps)
    frames, height, width = config.data.sizes[0]

    def init(rng):
        return train_lib.create_train_state(
            init_params(model, rng, frames, height, width), optimizer
        )

    return jax.eval_shape(init, jax.random.key(0)), init, optimizer


def load(checkpoint: str | pathlib.Path, step: int | None = None) -> TrainedCaptioner:
    """A `train-captioner` workdir (newest or given step) or a captioner bundle."""
    checkpoint = pathlib.Path(checkpoint)
    if bundle.is_bundle(checkpoint):
        meta = bundle.read_meta(checkpoint)
        if meta.get("kind") != KIND:
            raise checkpoints.CheckpointError(f"{checkpoint} is not a captioner bundle")
        if step is not None and step != meta["step"]:
            raise checkpoints.CheckpointError(f"{checkpoint} holds step {meta['step']}")
        config = ml_collections.ConfigDict(meta["config"])
        step = meta["step"]
    else:
        config = checkpoints.saved_config(checkpoint, step)
        if config.get("kind") != KIND:
            raise checkpoints.CheckpointError(f"{checkpoint} is not a `train-captioner` run")
    tokenizer_file = checkpoint / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        raise checkpoints.CheckpointError(f"{checkpoint} has no {TOKENIZER_FILE}")
    tokenizer = CaptionTokenizer.from_json(tokenizer_file.read_text(), config.model.max_length)
    model = make_model(config.model, tokenizer.vocab_size)
    abstract, _, _ = abstract_train_state(config, model)
    if bundle.is_bundle(checkpoint):
        params = bundle.read_params(checkpoint, PARAMS, abstract.params)
    else:
        device = jax.local_devices()[0]
        mesh = sharding.make_mesh({"data": -1}, devices=[device])
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)),
            abstract,
        )
        state = checkpoints.restore_state(checkpoint, target, step)
        params, step = state.params, int(state.step)
    return TrainedCaptioner(model, jax.device_put(params), tokenizer, config, step)


def export(
    workdir: str | pathlib.Path, out: str | pathlib.Path, step: int | None = None,
    dtype: str = "float32",
) -> dict:  # fmt: skip
    """Writes a captioner bundle (params, tokenizer, config) of a `train-captioner` run."""
    captioner = load(workdir, step)
    meta = {"kind": KIND, "config": json.loads(captioner.config.to_json()), "step": captioner.step}
    files = {TOKENIZER_FILE: pathlib.Path(workdir) / TOKENIZER_FILE}
    return bundle.write(out, meta, {PARAMS: captioner.params}, np.dtype(dtype), files=files)
