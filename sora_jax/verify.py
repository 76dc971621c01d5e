"""`sora-jax verify FILE...`: a file's C2PA content credentials and whether they hold.

    sora-jax verify out.mp4 [more files] [--as_json]

Prints, per file, the validation state ("Trusted"; "Valid": signature and content hashes hold
but the signer is on no trust list, as with sora_jax's development chain; "Invalid": the file
or its manifest was changed after signing), the generator, the creation action and its digital
source type, the signer, and sora_jax's generation record. Exit status: 0 when every file
validates, 1 when one is invalid, 2 when one has no manifest or cannot be read.
"""

import json
import pathlib
import sys

from absl import flags

from sora_jax import cli, provenance

_JSON = flags.DEFINE_boolean("as_json", False, "Print each file's record as one JSON line.")


def describe(path, record: dict) -> str:
    explain = {
        "Trusted": "signature, content hashes and signer all check",
        "Valid": "signature and content hashes check; the signer is on no trust list",
        "Invalid": "the file or its credentials were changed after signing",
    }
    lines = [f"{path}: {record['state']} ({explain.get(record['state'], 'see failures')})"]
    for agent in record["generator"]:
        lines.append(f"  generator: {agent.get('name')} {agent.get('version', '')}".rstrip())
    for action in record["actions"]:
        source = str(action.get("digitalSourceType", "")).rsplit("/", 1)[-1]
        lines.append(f"  action: {action.get('action')} ({source})")
    signer = record["signer"]
    note = " - the local development chain, trusted by no one" if record["development"] else ""
    lines.append(f"  signed by: {signer['common_name']} / {signer['issuer']}{note}")
    if record["generation"] is not None:
        lines.append(f"  generation: {json.dumps(record['generation'], sort_keys=True)}")
    for failure in record["failures"]:
        lines.append(f"  failure: {failure.get('code')}: {failure.get('explanation', '')}")
    return "\n".join(lines)


def main(argv):
    paths = [pathlib.Path(a) for a in argv[1:]]
    if not paths:
        raise cli.UserError("give one or more files to verify")
    status = 0
    for path in paths:
        if not path.is_file():
            raise cli.UserError(f"{path}: no such file")
        try:
            record = provenance.read(path)
        except Exception as e:  # the SDK's errors for unreadable or unsupported files
            raise cli.UserError(f"{path}: cannot read C2PA credentials: {e}") from e
        if record is None:
            raise cli.UserError(f"{path}: no C2PA manifest")
        print(json.dumps({"file": str(path), **record}) if _JSON.value else describe(path, record))
        if record["state"] not in ("Valid", "Trusted"):
            status = 1
    sys.exit(status)


if __name__ == "__main__":
    cli.run(main)
