"""Writing result files whole or not at all: a temporary sibling renamed into place."""

import json
import os
import pathlib
import uuid


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` so readers see the old file or the new one, never a partial one."""
    path = pathlib.Path(path)
    # Hidden, unique and in the same directory: `os.replace` is then an atomic rename.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, record) -> None:
    write_text(path, json.dumps(record, indent=1))
