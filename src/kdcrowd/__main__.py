"""``python -m kdcrowd`` and the ``kdcrowd`` console script: :func:`run`."""

import gc
import sys


def run() -> None:
    """The command line, with the cyclic garbage collector off while the libraries are
    imported: they make hundreds of thousands of objects and no garbage, and a collection
    walks all of them (torch, pandas, typer, rich).
    :func:`kdcrowd.cli.main` freezes what they made and turns the collector back on.
    ``kdcrowd --version`` alone answers before those imports (the command line's options
    are built from the door configurations, which import torch: seconds for one line)."""
    if sys.argv[1:] == ["--version"]:
        from . import __version__

        print(f"kdcrowd {__version__}")
        return
    gc.disable()
    from .cli import main

    main()


if __name__ == "__main__":
    run()
