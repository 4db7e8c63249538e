"""What a ``stabletrain`` sub-command and a ``stabletrain demo --data NAME`` job are, for the registries.

A package adds a sub-command by registering a :class:`Command` in
:data:`stabletrain.registry.COMMANDS` (and a demo job by registering a
:class:`Demo` in :data:`stabletrain.registry.DEMOS`) from its
``stabletrain.plugins`` entry point. The ``run`` function returns the exit
status and raises :class:`~stabletrain.checks.StableTrainError` for bad
input, which the CLI turns into one ``stabletrain: error: …`` line.

>>> import argparse
>>> def add(sub): return sub.add_parser("hello")
>>> def run(args, log): return 0
>>> Command("hello", add, run).name
'hello'
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Command", "Demo", "Log"]

#: Progress lines go through this (``tqdm.write`` to stderr, or nothing with ``--quiet``).
Log = Callable[[str], None]


@dataclass(frozen=True)
class Command:
    """A sub-command: ``add_parser(subparsers)`` adds its parser, ``run(args, log)`` runs it."""

    name: str
    add_parser: Callable[[Any], argparse.ArgumentParser | None]
    run: Callable[[argparse.Namespace, Log], int]


@dataclass(frozen=True)
class Demo:
    """A ``stabletrain demo --data NAME`` job.

    ``add_options(parser)`` adds its own flags to the demo parser (each with
    ``default=None``); ``options`` names their destinations, so that the
    demo command can reject them when another ``--data`` is chosen.
    """

    name: str
    add_options: Callable[[argparse.ArgumentParser], None]
    options: tuple[str, ...]
    run: Callable[[argparse.Namespace, Log], int]
