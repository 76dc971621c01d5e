"""`sora-jax eval-vae`: reconstruction quality of a trained video autoencoder.

    sora-jax eval-vae --checkpoint W (--videos DIR_OR_FILES | --dataset shapes_world|lavfi)
                      --out_dir D [--num_clips N --frames F --height H --width W]

Encodes each video to the posterior mean and decodes it (chunked in time, so any length fits),
then reports PSNR, SSIM and LPIPS (AlexNet) per video and their means in D/report.json, with the
compression ratio, PSNR by frame index and at edges / elsewhere, and writes original |
reconstruction GIFs of the first few videos.
Videos given as files are trimmed to the largest 1 + 4k frames and center-cropped to multiples of
the spatial factor.
"""

import pathlib
import time

import jax.numpy as jnp
import numpy as np
from absl import flags
from tqdm import tqdm

from sora_jax import atomic, checkpoints, cli, probe_eval, vae_lib
from sora_jax.data.lavfi import SOURCES as LAVFI_SOURCES
from sora_jax.data.lavfi import render_lavfi
from sora_jax.data.shapes_world import probe
from sora_jax.data.shapes_world.world import generate_clip
from sora_jax.metrics import video_metrics
from sora_jax.models.vae import ChunkedCodec
from sora_jax.video_io import VideoDecodeError, read_video, write_video

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A `train-vae` workdir or a bundle.")
_VIDEOS = flags.DEFINE_list("videos", None, "Video files or folders to reconstruct.")
_DATASET = flags.DEFINE_enum(
    "dataset",
    None,
    ["shapes_world", "lavfi"],
    "Built-in videos: Shapes World heldout clips or ffmpeg test sources.",
)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where report.json and samples go.")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 64, "Shapes World clips to evaluate.")
_FRAMES = flags.DEFINE_integer("frames", 17, "Frames per built-in clip (1 + 4k).")
_HEIGHT = flags.DEFINE_integer("height", 64, "Height of built-in clips.")
_WIDTH = flags.DEFINE_integer("width", 64, "Width of built-in clips.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 4, "Comparison GIFs to write.")

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".gif", ".mkv", ".avi")


def fit_to_vae(video: np.ndarray, temporal: int, spatial: int, name: str) -> np.ndarray:
    """Trims to 1 + k*temporal frames and center-crops H, W to multiples of `spatial`."""
    if video.ndim != 4 or video.shape[-1] != 3:
        raise cli.UserError(f"{name}: expected [T, H, W, 3] frames, got {video.shape}")
    frames = 1 + (video.shape[0] - 1) // temporal * temporal
    height, width = video.shape[1] // spatial * spatial, video.shape[2] // spatial * spatial
    if height == 0 or width == 0:
        raise cli.UserError(
            f"{name}: frames of {video.shape[1]}x{video.shape[2]} are smaller "
            f"than the VAE's spatial factor {spatial}"
        )
    top, left = (video.shape[1] - height) // 2, (video.shape[2] - width) // 2
    return video[:frames, top : top + height, left : left + width]


def shapes_world_clips() -> tuple[list[tuple[str, np.ndarray]], dict[str, str]]:
    """Held-out Shapes World clips as (name, video) pairs, and their captions by name."""
    videos, captions = [], {}
    for i in range(_NUM_CLIPS.value):
        clip = generate_clip(
            i, split="heldout", frames=_FRAMES.value, height=_HEIGHT.value, width=_WIDTH.value
        )
        videos.append((f"shapes_world/heldout/{i}", clip["video"]))
        captions[videos[-1][0]] = clip["caption"]
    return videos, captions


def collect_videos(
    paths: list[str] | None, dataset: str | None
) -> tuple[list[tuple[str, np.ndarray]], dict[str, str]]:
    """(name, video) pairs to evaluate, and the captions of those that have one."""
    if bool(paths) == bool(dataset):
        raise cli.UserError("give exactly one of --videos or --dataset")
    if dataset == "shapes_world":
        return shapes_world_clips()
    if dataset == "lavfi":
        return [
            (
                f"lavfi/{s}",
                render_lavfi(s, _FRAMES.value, _HEIGHT.value, _WIDTH.value, offset_s=1.0),
            )
            for s in LAVFI_SOURCES
        ], {}
    files = []
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise cli.UserError(f"no such file or folder: {path}")
    if not files:
        raise cli.UserError(f"no videos found in {paths}")
    videos = []
    for file in files:
        try:
            videos.append((str(file), read_video(file)[0]))
        except VideoDecodeError as e:
            raise cli.UserError(f"cannot read {file}: {e}") from e
    return videos, {}


def psnr_by_frame(frame_errors: list[np.ndarray]) -> list[float]:
    """PSNR at each frame index, from the squared errors of every video that has that frame.

    A causal VAE that degrades with the length of the context it has read shows it here (frame
    0 is encoded alone; later frames read everything before them).
    """
    longest = max(len(e) for e in frame_errors)
    pooled = [np.mean([e[t] for e in frame_errors if len(e) > t]) for t in range(longest)]
    return [round(float(p), 3) for p in video_metrics.psnr_from_mse(pooled)]


def psnr_by_region(region_errors: list[dict[str, float | int]]) -> dict[str, float]:
    """PSNR at edges and elsewhere (`video_metrics.squared_error_by_region`, pooled over the
    videos), with the edges' share of the pixels and of the squared error: where an
    autoencoder's error sits (on Shapes World, at the few pixels of shape outlines; in natural
    video nearly every pixel counts as an edge, so the split says little there)."""
    total = {k: sum(e[k] for e in region_errors) for k in region_errors[0]}
    out = {}
    for region, values in (("edges", "edge_values"), ("flat", "flat_values")):
        if total[values]:
            out[f"psnr_{region}"] = float(
                video_metrics.psnr_from_mse(total[region] / total[values])
            )
    out["edge_pixel_share"] = total["edge_values"] / (total["edge_values"] + total["flat_values"])
    error = total["edges"] + total["flat"]
    out["edge_error_share"] = total["edges"] / error if error else 0.0
    return {k: round(v, 4) for k, v in out.items()}


def evaluate(
    workdir: str,
    videos: list[tuple[str, np.ndarray]],
    out_dir: pathlib.Path,
    num_samples: int,
    captions: dict[str, str] | None = None,
) -> dict:
    """Reconstruction metrics per video and mean. With Shapes World `captions` (by video name)
    the probe also reads each reconstruction against its caption: how much of what a prompt
    asks for survives the autoencoder, the ceiling of the DiT's prompt adherence."""
    captions = captions or {}
    model, params, config = vae_lib.load_vae(workdir)
    codec = ChunkedCodec(model, latent_frames_per_chunk=4)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, readings, frame_errors, region_errors = [], [], [], []
    for i, (name, video) in enumerate(tqdm(videos, desc="eval-vae", unit="video")):
        video = fit_to_vae(video, model.temporal_factor, model.spatial_factor, name)
        start = time.perf_counter()
        latent = codec.encode(params, vae_lib.to_unit_range(jnp.asarray(video[None])))
        recon = np.asarray(vae_lib.to_uint8(codec.decode(params, latent)))[0]
        seconds = time.perf_counter() - start
        frame_errors.append(video_metrics.squared_error_by_frame(video, recon))
        region_errors.append(video_metrics.squared_error_by_region(video, recon))
        rows.append(
            {
                "video": name,
                "shape": list(video.shape),
                # Capped: an exact reconstruction's infinite PSNR would swamp the mean.
                "psnr": float(video_metrics.psnr_from_mse(np.mean(frame_errors[-1]))),
                "ssim": video_metrics.ssim(video, recon),
                "lpips": video_metrics.lpips_video(video, recon),
                "seconds": seconds,
                "latent_shape": list(latent.shape[1:]),
            }
        )
        if name in captions:
            readings.append(probe.probe(recon, captions[name]))
            rows[-1]["probe_adherence"] = readings[-1]["adherence"]
        if i < num_samples:
            write_video(out_dir / f"recon_{i:03d}.gif", np.concatenate([video, recon], axis=2))
    report = {
        "checkpoint": str(workdir),
        "variant": config.model.variant,
        "num_videos": len(rows),
        "mean": {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "lpips")},
        # Pixel values per latent value, for long clips (frame 0 alone makes short ones lower).
        "compression_ratio": model.temporal_factor
        * model.spatial_factor**2
        * 3
        / model.latent_channels,
        "psnr_by_frame": psnr_by_frame(frame_errors),
        "psnr_by_region": psnr_by_region(region_errors),
        "videos": rows,
    }
    if readings:
        report["probe"] = probe_eval.summarize(readings)
    atomic.write_json(out_dir / "report.json", report)
    return report


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {argv[1:]}")
    if not _CHECKPOINT.value or not _OUT_DIR.value:
        raise cli.UserError("--checkpoint and --out_dir are required")
    videos, captions = collect_videos(_VIDEOS.value, _DATASET.value)
    with cli.user_errors(checkpoints.CheckpointError):
        report = evaluate(
            _CHECKPOINT.value, videos, pathlib.Path(_OUT_DIR.value), _NUM_SAMPLES.value, captions
        )
    mean = report["mean"]
    probe_line = ""
    if "probe" in report:
        probe_line = f"; probe adherence of reconstructions {report['probe']['adherence']:.1%}"
    print(
        f"{report['num_videos']} videos: PSNR {mean['psnr']:.2f} dB, SSIM {mean['ssim']:.4f}, "
        f"LPIPS {mean['lpips']:.4f}; compression {report['compression_ratio']:.1f}x{probe_line}; "
        f"report in {_OUT_DIR.value}/report.json"
    )
    by_frame = report["psnr_by_frame"]
    if len(by_frame) > 1:
        print(
            f"PSNR by frame index: {by_frame[0]:.2f} dB at frame 0 (encoded alone), "
            f"{min(by_frame[1:]):.2f}-{max(by_frame[1:]):.2f} dB after (report psnr_by_frame)"
        )
    regions = report["psnr_by_region"]
    if "psnr_edges" in regions and "psnr_flat" in regions:
        print(
            f"PSNR at edges ({regions['edge_pixel_share']:.1%} of the pixels, "
            f"{regions['edge_error_share']:.1%} of the squared error): "
            f"{regions['psnr_edges']:.2f} dB; elsewhere {regions['psnr_flat']:.2f} dB "
            "(report psnr_by_region)"
        )


if __name__ == "__main__":
    cli.run(main)
