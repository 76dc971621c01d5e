"""Prompt files: jsonl with one `{"prompt": ..., ...}` object a line (blank lines skipped)."""

import json
import pathlib

from sora_jax import cli


def read_prompts(path: str | pathlib.Path) -> list[dict]:
    """The file's entries, each with a non-empty "prompt"; `cli.UserError` names a bad line."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise cli.UserError(f"{path}: no such prompts file")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise cli.UserError(f"{path}:{number}: not JSON ({e.msg})") from e
        prompt = entry.get("prompt") if isinstance(entry, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise cli.UserError(f'{path}:{number}: empty or missing "prompt"')
        entries.append({**entry, "line": number})
    if not entries:
        raise cli.UserError(f"{path}: no prompts")
    return entries
