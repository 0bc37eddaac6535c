"""``python -m kdcrowd`` and the ``kdcrowd`` console script: :func:`run`."""

import gc


def run() -> None:
    """The command line, with the cyclic garbage collector off while the libraries are
    imported: they make hundreds of thousands of objects and no garbage, and a collection
    walks all of them (torch, pandas, typer, rich).
    :func:`kdcrowd.cli.main` freezes what they made and turns the collector back on."""
    gc.disable()
    from .cli import main

    main()


if __name__ == "__main__":
    run()
