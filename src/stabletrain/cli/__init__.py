"""The ``stabletrain`` command line: one module per command.

* :mod:`.train` — ``stabletrain train``, with flags generated from the
  training config (:mod:`.options`);
* :mod:`.evaluate` — ``stabletrain evaluate``;
* :mod:`.demo` — ``stabletrain demo`` (and the extensions' demo jobs);
* :mod:`.compare` — ``stabletrain compare``;
* :mod:`.main` — the entry point, which also adds the sub-commands that
  extensions register in :data:`stabletrain.registry.COMMANDS`.

Options can also come from a YAML file (``--config``); flags on the command
line win over the file, and the resolved settings are saved beside the
results. Problems with the input end the command with one line on stderr,
``stabletrain: error: …``, and exit status 2.
"""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
