"""Checks and wording of the command line, kept out of :mod:`kdcrowd.cli`.

* :func:`check_training_settings` - the training options of ``kdcrowd fit`` checked before
  anything is created in ``OUT`` (a bad ``--lr`` or an absent GPU used to leave
  ``OUT/checkpoints`` or ``OUT/run.json`` behind);
* :func:`cli_message` - a library message with its Python keywords
  (``duplicates='first'``, ``classes=[...]``) replaced by the command-line options that
  do the same (``--duplicates first``, ``--classes``).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["EXIT_CODES", "check_training_settings", "cli_message"]

#: The exit statuses of every ``kdcrowd`` command (also in the README).
EXIT_CODES = {0: "success", 1: "internal error (a bug: a traceback is printed)", 2: "bad input or usage (one 'error:' line on stderr)", 130: "interrupted (Ctrl-C or SIGTERM)"}


def check_training_settings(p: dict[str, Any]) -> None:
    """Raise one ``ValueError`` naming the option for a training setting of ``kdcrowd fit``
    (the dictionary of its options) that cannot work: ``--device`` (a torch device that
    exists here: :func:`kdcrowd.training.resolve_device`, the check every door makes). The
    other training settings are checked by their configurations
    (:class:`~kdcrowd.training.TrainConfig`, :func:`kdcrowd.doors.settings_from_options`)
    for every door."""
    from .config import cli_style, option_style
    from .training import resolve_device

    with option_style(cli_style):
        resolve_device(p.get("device", "auto"), distributed=False)


_KEYWORDS = (
    (re.compile(r"duplicates='(\w+)' or '(\w+)'"), r"--duplicates \1 or \2"),
    (re.compile(r"duplicates='(\w+)'"), r"--duplicates \1"),
    (re.compile(r"\bpass classes=\[\.\.\.\]", re.IGNORECASE), "list the classes with --classes a,b,c"),
    (re.compile(r"classes=\[\.\.\.\]"), "--classes a,b,c"),
    (re.compile(r"Add the missing classes to `classes`"), "Add the missing classes to --classes"),
    # Annotations.from_long's advice, said for a file: its header line, its rows, the item files
    (re.compile(r"name other columns with from_long\(df, item=\.\.\., worker=\.\.\., label=\.\.\.\)"),
     "rename those columns in the header line of --annotations, or name the column of item ids with --item-column NAME"),
    (re.compile(r"Drop those rows \(df\.dropna\(\)\) or fill them in"),
     "Fill them in or remove those rows from --annotations"),
    (re.compile(r"\(item ids not in `items`\)"), "(item ids not among the items of --features, --images or --texts)"),
    (re.compile(r"Add those ids to `items` or drop the rows"), "Add those items to --features, --images or --texts, or remove those rows from --annotations"),
    (re.compile(r"`items` holds"), "the known items are"),
    # the data sets' advice (kdcrowd run)
    (re.compile(r"pass verify=False to load it anyway"), "add --dataset-option verify=false to load it anyway"),
    (re.compile(r"\(or root=\.\.\.\)"), "(or --data-root)"),
)


def cli_message(message: str) -> str:
    """``message`` with the Python keywords of the library replaced by command-line options."""
    for pattern, repl in _KEYWORDS:
        message = pattern.sub(repl, message)
    return message
