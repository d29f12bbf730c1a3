"""Command line: ``equitrain-jax {convert, export, evaluate, finetune, phonons, qha, conductivity, demo}``.

Each subcommand lives in its own module with ``add_parser(sub)``, ``check(args)`` and
``run(args)``; they stay thin, the work is in the package.  ``check`` validates every input
before any work and without loading JAX (see `equitrain_jax.cli.checks`).  Every failure ends in
one line on stderr, ``equitrain-jax CMD: error: ...``: bad input exits with status 2, an
unexpected error with 1 (``--traceback`` shows it in full), Ctrl-C or SIGTERM with 130.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from equitrain_jax.cli import conductivity, convert, demo, evaluate, export, finetune, phonons, qha

SUBCOMMANDS = (convert, export, evaluate, finetune, phonons, qha, conductivity, demo)
BAD_INPUT, INTERNAL_ERROR, INTERRUPTED = 2, 1, 130

CACHE_ENV = "EQUITRAIN_JAX_CACHE_DIR"


def enable_compilation_cache() -> Optional[Path]:
    """Keep XLA's compiled programs on disk between runs (JAX's persistent compilation cache).

    The directory is ``$EQUITRAIN_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/equitrain-jax/xla``
    (``~/.cache/...``); an empty ``EQUITRAIN_JAX_CACHE_DIR`` turns the cache off, and a cache the
    user configured for JAX (``JAX_COMPILATION_CACHE_DIR``) is left as it is.  A later run with
    the same model and structure sizes then loads its programs instead of compiling them: the
    first Hessian of 64-atom Si with MACE-MP-0 medium took 2.9 s instead of 8.4 s.  Programs
    that compiled in under a second are not stored (JAX's
    ``jax_persistent_cache_min_compile_time_secs``).  Returns the directory, or None.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    directory = os.environ.get(CACHE_ENV)
    if directory is None:
        directory = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "equitrain-jax" / "xla")
    if not directory:
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    return Path(directory)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` gives every option's default: appended as ``(default: X)`` unless the help
    already names it, the option is a flag, or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or "default" in text.lower() or action.nargs == 0):
            return text
        return text + " (default: %(default)s)"


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(prog="equitrain-jax", description=__doc__.splitlines()[0])
    main_parser.add_argument("--traceback", action="store_true",
                             help="on an unexpected error, show Python's traceback instead of one line")
    sub = main_parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    for command in sub.choices.values():
        if command.formatter_class is argparse.HelpFormatter:
            command.formatter_class = DefaultsHelpFormatter
        for action in command._actions:  # an option without help text still shows its default
            if (action.help is None and action.option_strings and action.default is not None
                    and action.default is not False and action.nargs != 0):
                action.help = "default: %(default)s"
    return main_parser


def _subcommand_parser(main_parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    subparsers = next(action for action in main_parser._actions if isinstance(action, argparse._SubParsersAction))
    return subparsers.choices[command]


class CommandFailed(SystemExit):
    """The exit of a failed command: ``code`` is the exit status, ``str()`` the one line printed."""

    def __init__(self, code: int, message: str):
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _fail(code: int, message: str) -> CommandFailed:
    print(message, file=sys.stderr)
    return CommandFailed(code, message)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def finite_numbers(command: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse ``nan`` and ``inf`` (which Python's float() accepts) for every number option of
    ``command``: none of them means anything with it, and further on they fail far from the
    option, or not at all."""
    for action in command._actions:
        value = getattr(args, action.dest, None)
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            name = max(action.option_strings, key=len) if action.option_strings else action.dest
            raise ValueError(f"{name} must be a finite number, got {' '.join(map(str, values))}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    main_parser = parser()
    args = main_parser.parse_args(argv)
    args.argv, args.started = argv, time.time()
    prefix = f"equitrain-jax {args.command}"
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous = signal.signal(signal.SIGTERM, _terminate)  # a batch system's notice: like Ctrl-C
    try:
        finite_numbers(_subcommand_parser(main_parser, args.command), args)
        args.check(args)
        enable_compilation_cache()
        args.func(args)
    except KeyboardInterrupt:
        raise _fail(INTERRUPTED, f"{prefix}: interrupted; {args.interrupted(args)}") from None
    except (ValueError, OSError, ImportError) as error:
        if args.traceback:
            raise
        raise _fail(BAD_INPUT, f"{prefix}: error: {_one_line(error)}") from None
    except Exception as error:
        if args.traceback:
            raise
        raise _fail(INTERNAL_ERROR, f"{prefix}: error: unexpected {type(error).__name__}: {_one_line(error)} (rerun "
                                    f"with 'equitrain-jax --traceback {args.command} ...' for the traceback, and please "
                                    "report it)") from None
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
