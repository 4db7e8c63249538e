"""The ``stabletrain`` entry point: one sub-command per registered :class:`~stabletrain.commands.Command`.

The core registers ``train``, ``evaluate``, ``demo`` and ``compare``;
extensions add theirs (``jets``) from their ``stabletrain.plugins`` entry
point. Problems with the input end the command with one line on stderr,
``stabletrain: error: …``, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .. import __version__
from ..checks import StableTrainError
from ..registry import COMMANDS
from .common import log_to_stderr

__all__ = ["main", "build_parser", "CORE_COMMANDS"]

#: The core's commands, in the order ``--help`` lists them; extensions' commands follow.
CORE_COMMANDS = ("train", "evaluate", "demo", "compare")


def _register_core() -> None:
    from .compare import COMMAND as compare
    from .demo import COMMAND as demo
    from .evaluate import COMMAND as evaluate
    from .train import COMMAND as train

    for command in (train, evaluate, demo, compare):
        if not COMMANDS.registered(command.name):
            COMMANDS.register(command.name, command)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: the core's commands, then every registered extension's."""
    _register_core()
    parser = argparse.ArgumentParser(
        prog="stabletrain",
        description="Stability training (Zheng et al., CVPR 2016) and robustness evaluation.")
    parser.add_argument("--version", action="version", version=f"stabletrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = list(CORE_COMMANDS) + [n for n in COMMANDS.names() if n not in CORE_COMMANDS]
    for name in names:
        COMMANDS.get(name).add_parser(sub)
    return parser


def _show_warnings() -> None:
    """Warnings of the library's loggers as ``stabletrain: warning: …`` lines on stderr (once per process)."""
    import logging

    class CurrentStderr(logging.StreamHandler):
        """Writes to whatever ``sys.stderr`` is when a warning comes (``main`` called in-process may see
        another stream each time, as under pytest's capture)."""

        @property  # type: ignore[override]
        def stream(self):  # type: ignore[no-untyped-def]
            return sys.stderr

        @stream.setter
        def stream(self, value) -> None:  # type: ignore[no-untyped-def]
            pass

    logger = logging.getLogger("stabletrain")
    if not any(getattr(h, "_stabletrain", False) for h in logger.handlers):
        handler = CurrentStderr()
        handler.setFormatter(logging.Formatter("stabletrain: warning: %(message)s"))
        handler.setLevel(logging.WARNING)
        handler._stabletrain = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stabletrain`` command; returns the exit status."""
    _show_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS.get(args.command).run(args, log_to_stderr(getattr(args, "quiet", False)))
    except StableTrainError as err:
        print(f"stabletrain: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stabletrain: interrupted; finished epochs are checkpointed, continue with --resume",
              file=sys.stderr)
        return 130
    except OSError as err:
        from ..files import describe_os_error

        message = describe_os_error(err, err.filename, what="cannot access") if err.filename else \
            (err.strerror or str(err))
        print(f"stabletrain: error: {message}", file=sys.stderr)
        return 2
    except MemoryError:
        print("stabletrain: error: out of memory; try a smaller --batch-size", file=sys.stderr)
        return 1
    finally:
        sys.stdout.flush()
