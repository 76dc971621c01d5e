"""Spacetime patches: a video latent [B, t, h, w, c] <-> a token sequence [B, N, pt*ph*pw*c].

Sora (Brooks et al. 2024) turns the compressed video into "spacetime patches" that play the role
of text tokens; a patch covers pt latent frames and ph x pw latent pixels. Each token also gets
its (t, h, w) grid coordinate for the 3D rotary embedding and a segment id, so clips of different
shapes can later be packed into one sequence (NaViT, Dehghani et al. 2023) with attention blocked
between segments. Tokens are ordered t-major, then h, then w.
"""

import jax.numpy as jnp


def check_patchable(latent_shape: tuple[int, ...], patch: tuple[int, int, int]) -> None:
    _, t, h, w, _ = latent_shape
    for name, size, p in zip(("frames", "height", "width"), (t, h, w), patch, strict=True):
        if size % p:
            raise ValueError(
                f"latent {name} {size} is not divisible by the patch size {p} "
                f"(latent shape {tuple(latent_shape)}, patch {tuple(patch)})"
            )


def grid_shape(latent_shape: tuple[int, ...], patch: tuple[int, int, int]) -> tuple[int, ...]:
    """(t / pt, h / ph, w / pw): the token grid of a latent."""
    check_patchable(latent_shape, patch)
    return tuple(s // p for s, p in zip(latent_shape[1:4], patch, strict=True))


def patchify(latent_BxTxHxWxC, patch: tuple[int, int, int]):
    """[B, t, h, w, c] -> tokens [B, N, pt*ph*pw*c] with N = (t/pt)(h/ph)(w/pw)."""
    check_patchable(latent_BxTxHxWxC.shape, patch)
    b, t, h, w, c = latent_BxTxHxWxC.shape
    pt, ph, pw = patch
    x = latent_BxTxHxWxC.reshape(b, t // pt, pt, h // ph, ph, w // pw, pw, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, (t // pt) * (h // ph) * (w // pw), pt * ph * pw * c)


def unpatchify(tokens_BxNxP, grid: tuple[int, int, int], patch: tuple[int, int, int]):
    """Inverse of `patchify`: tokens [B, N, P] on a (gt, gh, gw) grid -> [B, t, h, w, c]."""
    b, n, p = tokens_BxNxP.shape
    gt, gh, gw = grid
    pt, ph, pw = patch
    if n != gt * gh * gw or p % (pt * ph * pw):
        raise ValueError(f"{n} tokens of {p} features do not fill grid {grid} / patch {patch}")
    c = p // (pt * ph * pw)
    x = tokens_BxNxP.reshape(b, gt, gh, gw, pt, ph, pw, c)
    x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, gt * pt, gh * ph, gw * pw, c)


def grid_coords(grid: tuple[int, int, int], batch: int):
    """coords [B, N, 3]: each token's (t, h, w) index on the token grid, as float32.

    Integer grid positions make the rotary embedding relative: a model trained on one grid
    attends by offsets, so it can be sampled on a larger or differently shaped one.
    """
    gt, gh, gw = grid
    t, h, w = jnp.meshgrid(jnp.arange(gt), jnp.arange(gh), jnp.arange(gw), indexing="ij")
    coords = jnp.stack([t, h, w], axis=-1).reshape(1, gt * gh * gw, 3).astype(jnp.float32)
    return jnp.broadcast_to(coords, (batch, gt * gh * gw, 3))


def frame_mask_to_tokens(mask_BxT, grid: tuple[int, int, int], patch: tuple[int, int, int]):
    """A per-latent-frame flag [B, t] -> per-token [B, N] (a token takes its first frame's flag).

    Conditioning (a clean first frame for image-to-video, frames to extend from) is chosen per
    latent frame; tokens inherit it. With pt > 1 a token spans pt frames, so conditioning is
    only exact on patch boundaries.
    """
    b = mask_BxT.shape[0]
    gt, gh, gw = grid
    per_patch = mask_BxT[:, :: patch[0]][:, :gt]
    return jnp.broadcast_to(per_patch[:, :, None], (b, gt, gh * gw)).reshape(b, gt * gh * gw)


def finer_patch_weights(embed_PxD, out_DxP, out_P, old, new):
    """A DiT's patch-embedding kernel and output layer for a finer patch `new` from its `old` ones.

    Each axis of `new` must divide `old`'s. The resized layers make a model on a latent equal,
    exactly, to the old model on that latent upsampled (nearest) by old / new, with its output
    average-pooled back: a `new` patch upsampled is an `old` patch, so the embedding sums the
    old kernel's rows over each upsampled cell (the adjoint of nearest upsampling, as in
    FlexiViT's pseudo-inverse resize, Beyer et al. 2023), and the output layer averages its
    columns the same way. The blocks see the same tokens at the same grid coordinates as the
    old model on the upsampled latent, so a run warm-started this way begins as the old model
    on a latent upsampled by old / new.

    Args:
      embed_PxD: patch embedding kernel [prod(old) * channels, D].
      out_DxP, out_P: output layer kernel [D, prod(old) * channels] and bias.
      old, new: (pt, ph, pw) patch sizes: the source's and the one wanted.

    Returns:
      (embed kernel, output kernel, output bias) for `new`.
    """
    if any(o % n for o, n in zip(old, new, strict=True)):
        raise ValueError(
            f"the patch wanted, {tuple(new)}, does not divide the source's, {tuple(old)}, on "
            "every axis"
        )
    channels, rest = divmod(embed_PxD.shape[0], old[0] * old[1] * old[2])
    if rest or out_DxP.shape[1] != embed_PxD.shape[0]:
        raise ValueError(
            f"patch layers {embed_PxD.shape} / {out_DxP.shape} are not those of patch {old}"
        )
    factors = tuple(o // n for o, n in zip(old, new, strict=True))
    cells = [s for n, f in zip(new, factors, strict=True) for s in (n, f)]  # i = a * f + r

    def pool(rows_PxD, reduce):
        d = rows_PxD.shape[1]
        pooled = reduce(rows_PxD.reshape(*cells, channels, d), axis=(1, 3, 5))
        return pooled.reshape(-1, d)

    return (
        pool(embed_PxD, jnp.sum),
        pool(out_DxP.T, jnp.mean).T,
        pool(out_P[:, None], jnp.mean)[:, 0],
    )
