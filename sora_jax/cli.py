"""The `sora-jax` console script: one subcommand per module, each also `python -m` runnable.

Every subcommand is an absl program (`main(argv)` + module-level flags), so flags follow absl /
ml_collections conventions. A `UserError` raised by a command (bad input) becomes one line on
stderr and exit status 2; nothing else is printed.
"""

import contextlib
import importlib
import sys

from absl import app, flags

from sora_jax import host_memory

# subcommand -> module with `main(argv)`.
COMMANDS: dict[str, str] = {
    "data build": "sora_jax.data.build",
    "demo": "sora_jax.demo",
    "train-vae": "sora_jax.train_vae",
    "eval-vae": "sora_jax.eval_vae",
    "train": "sora_jax.train",
    "generate": "sora_jax.generate",
    "eval": "sora_jax.evaluate",
    "plan": "sora_jax.plan",
    "verify": "sora_jax.verify",
    "export": "sora_jax.export",
    "train-captioner": "sora_jax.train_captioner",
    "caption": "sora_jax.caption",
}

# Modules whose flags several commands read (--config, --workdir, --steps, --c2pa_cert, ...).
SHARED_FLAG_MODULES = (
    "sora_jax.train_flags",
    "sora_jax.distributed",
    "sora_jax.sampler_flags",
    "sora_jax.output_flags",
)


class UserError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


@contextlib.contextmanager
def user_errors(*error_types: type[Exception]):
    """Re-raises the given exception types from the block as `UserError` (bad input)."""
    try:
        yield
    except error_types as e:
        raise UserError(str(e)) from e


def run(main, argv: list[str] | None = None, name: str | None = None) -> None:
    """`app.run(main)` that turns a UserError into one clear line on stderr, after keeping
    freed host memory in the process (`host_memory`: before the first jax computation)."""
    host_memory.retain_freed_memory()
    program = (argv or sys.argv)[0]
    _make_key_flags(program, SHARED_FLAG_MODULES)  # also under `python -m sora_jax.<module>`
    name = name or program
    try:
        app.run(main, argv=argv)
    except UserError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        sys.exit(2)


def _make_key_flags(program: str, module_names) -> None:
    """absl's --help lists the key flags of the module `sys.argv[0]` names: make the flags that
    the modules `module_names` defined (those of them imported) key to `program`."""
    for name, module_flags in flags.FLAGS.flags_by_module_dict().items():
        if name in module_names:
            for flag in module_flags:
                flags.FLAGS.register_key_flag_for_module(program, flag)


def _list_command_flags_in_help(program: str, module_name: str) -> None:
    """Names the program in `sys.argv[0]`, where --help looks, with the command module's flags
    key to it (`run` adds the shared flag modules')."""
    sys.argv[0] = program
    _make_key_flags(program, (module_name,))


def _usage() -> str:
    lines = ["usage: sora-jax <command> [--flags]", "", "commands:"]
    lines += [f"  {command}" for command in COMMANDS]
    lines.append("\n`sora-jax <command> --help` lists a command's flags.")
    return "\n".join(lines)


def main() -> None:
    host_memory.retain_freed_memory()  # before any command's imports start threads
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if args else 2)
    # Two-word commands ("data build") take precedence over one-word ones.
    for words in (2, 1):
        command = " ".join(args[:words])
        if command in COMMANDS:
            break
    else:
        print(f"sora-jax: error: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(COMMANDS[command])
    program = f"sora-jax {command}"
    _list_command_flags_in_help(program, COMMANDS[command])
    run(module.main, argv=[program, *args[words:]], name=program)
