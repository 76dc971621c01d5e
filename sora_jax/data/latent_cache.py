"""A cache of VAE latents: encode a clip source once, train the diffusion transformer many epochs.

The frozen VAE's encoder costs more than the tiny DiT's whole train step on a CPU (measured: see
README), so `sora-jax train` encodes its clips once into `<dir>/`:

    meta.json         the VAE (workdir, step), the source, per-channel latent mean / std
    latents_<b>.npy   float16 [clips in bucket b, t, h, w, c] posterior means, one file per shape
    tail<k>_<b>.npy   float16 [clips in bucket b, k, h, w, c]: each clip's last 1 + r (k - 1)
                      pixel frames encoded alone (the tail conditioning of `tasks.py`)
    clips.jsonl       one line per clip: bucket, row, caption, detailed caption, labels

Built in a temporary directory and renamed into place, so a cache is either complete or absent.
`LatentCacheSource` serves it to the Grain pipeline like any other clip source.
"""

import json
import os
import pathlib
import shutil
import tempfile

import numpy as np
from tqdm import tqdm

from sora_jax import tasks, vae_lib


def build(
    cache_dir,
    source,
    vae_workdir: str,
    vae_step: int,
    *,
    description: dict,
    batch_size: int = 8,
    tail_lengths: tuple[int, ...] = (),
) -> dict:
    """Encodes every clip of `source` with step `vae_step` of the VAE in `vae_workdir`.

    Returns the meta dict. `tail_lengths` (latent frames) also stores, for clips longer than
    that, the encoding of their last frames alone.

    `description` (e.g. the data config) is stored and compared by `matches` so a cache built
    from other data or another VAE is never reused by mistake.
    """
    cache_dir = pathlib.Path(cache_dir)
    model, params, _ = vae_lib.load_vae(vae_workdir, vae_step)
    bucket_ids = np.asarray(getattr(source, "bucket_ids", np.zeros(len(source), np.int32)))
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".latent_cache_", dir=cache_dir.parent))
    try:
        rows = {}
        sums, squares, count = 0.0, 0.0, 0
        progress = tqdm(total=len(source), desc="latent cache", unit="clip")
        for bucket in np.unique(bucket_ids):
            members = np.flatnonzero(bucket_ids == bucket)
            store, tail_stores = None, {}
            for start in range(0, len(members), batch_size):
                indices = members[start : start + batch_size]
                clips = [source[int(i)] for i in indices]
                videos = np.stack([c["video"] for c in clips])
                # Pad the last batch to full size: one compiled encoder per bucket.
                padded = np.concatenate([videos, videos[:1].repeat(batch_size - len(videos), 0)])
                latents = np.asarray(vae_lib.encode(model, params, padded))[: len(videos)]
                if store is None:
                    store = np.lib.format.open_memmap(
                        tmp / f"latents_{bucket}.npy",
                        mode="w+",
                        dtype=np.float16,
                        shape=(len(members), *latents.shape[1:]),
                    )
                store[start : start + len(videos)] = latents
                for k in tail_lengths:
                    if k >= latents.shape[1]:
                        continue
                    frames = tasks.pixel_frames(k, model.temporal_factor)
                    tail = np.asarray(vae_lib.encode(model, params, padded[:, -frames:]))
                    if k not in tail_stores:
                        tail_stores[k] = np.lib.format.open_memmap(
                            tmp / f"tail{k}_{bucket}.npy",
                            mode="w+",
                            dtype=np.float16,
                            shape=(len(members), *tail.shape[1:]),
                        )
                    tail_stores[k][start : start + len(videos)] = tail[: len(videos)]
                sums = sums + latents.sum(axis=(0, 1, 2, 3), dtype=np.float64)
                squares = squares + (latents.astype(np.float64) ** 2).sum(axis=(0, 1, 2, 3))
                count += int(np.prod(latents.shape[:4]))
                for row, (i, clip) in enumerate(zip(indices, clips, strict=True)):
                    rows[int(i)] = {
                        "bucket": int(bucket),
                        "row": start + row,
                        "caption": _text(clip["caption"]),
                        "detailed_caption": _text(clip.get("detailed_caption", clip["caption"])),
                        "labels": _text(clip.get("labels", "{}")),
                    }
                progress.update(len(indices))
            for array in (store, *tail_stores.values()):
                array.flush()
            del store, tail_stores
        progress.close()
        mean = sums / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
        with open(tmp / "clips.jsonl", "w") as f:
            for i in range(len(source)):
                f.write(json.dumps(rows[i]) + "\n")
        meta = {
            "vae_workdir": str(pathlib.Path(vae_workdir).resolve()),
            "vae_step": vae_step,
            "num_clips": len(source),
            "description": description,
            "tail_lengths": list(tail_lengths),
            "latent_mean": mean.tolist(),
            "latent_std": std.tolist(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        os.replace(tmp, cache_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_meta(cache_dir) -> dict | None:
    path = pathlib.Path(cache_dir) / "meta.json"
    return json.loads(path.read_text()) if path.exists() else None


def matches(
    meta: dict | None,
    vae_workdir: str,
    vae_step: int,
    description: dict,
    tail_lengths: tuple[int, ...] = (),
) -> bool:
    """True when the cache was built from this data with this checkpoint of this VAE and holds
    the tail encodings asked for."""
    return (
        meta is not None
        and meta["vae_workdir"] == str(pathlib.Path(vae_workdir).resolve())
        and meta["vae_step"] == vae_step
        and meta["description"] == json.loads(json.dumps(description))
        and set(tail_lengths) <= set(meta.get("tail_lengths", []))
    )


class LatentCacheSource:
    """Grain random-access source: clip i -> {"latent": float32 [t,h,w,c], "caption", ...,
    "tail<k>": float32 [k,h,w,c] for each stored tail length shorter than the clip}."""

    def __init__(self, cache_dir):
        self.cache_dir = pathlib.Path(cache_dir)
        self.meta = read_meta(self.cache_dir)
        if self.meta is None:
            raise FileNotFoundError(f"no latent cache in {self.cache_dir}")
        with open(self.cache_dir / "clips.jsonl") as f:
            self.clips = [json.loads(line) for line in f]
        self._stores = {}

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def bucket_ids(self) -> np.ndarray:
        return np.asarray([c["bucket"] for c in self.clips], np.int32)

    @property
    def latent_shapes(self) -> list[tuple[int, ...]]:
        """Each clip's latent shape [t, h, w, c]."""
        shapes = {b: self._store(f"latents_{b}").shape[1:] for b in set(self.bucket_ids.tolist())}
        return [tuple(shapes[c["bucket"]]) for c in self.clips]

    def _store(self, name: str) -> np.ndarray:
        # Opened lazily, so a source pickled into a Grain worker maps the file there.
        if name not in self._stores:
            self._stores[name] = np.load(self.cache_dir / f"{name}.npy", mmap_mode="r")
        return self._stores[name]

    def __getstate__(self):
        return {**self.__dict__, "_stores": {}}

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[index]
        bucket, row = clip["bucket"], clip["row"]
        latent = np.asarray(self._store(f"latents_{bucket}")[row], np.float32)
        example = {
            "latent": latent,
            "caption": clip["caption"],
            "detailed_caption": clip["detailed_caption"],
            "labels": clip["labels"],
            "index": index,
        }
        for k in self.meta.get("tail_lengths", []):
            if k < latent.shape[0]:
                example[f"tail{k}"] = np.asarray(self._store(f"tail{k}_{bucket}")[row], np.float32)
        return example


def latent_stats(meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) used to normalise latents to ~unit variance for the DiT."""
    return np.asarray(meta["latent_mean"], np.float32), np.asarray(meta["latent_std"], np.float32)
