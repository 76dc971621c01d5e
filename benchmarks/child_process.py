"""Peak memory needs a fresh process per measurement: run this script again as a child."""

import json
import resource
import subprocess
import sys


def run_child(script: str, *args) -> dict:
    """Runs `python script --child args...` and returns the JSON its last stdout line holds."""
    out = subprocess.run(
        [sys.executable, script, "--child", *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_peak_rss(**extra) -> None:
    """The child's answer: its peak resident memory (MiB) and `extra`, as one JSON line."""
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak_mib, **extra}))
