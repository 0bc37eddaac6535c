"""``python -m kdcrowd`` and the ``kdcrowd`` console script: :func:`run`."""

import gc


def run() -> None:
    """The command line, with the cyclic garbage collector off while the libraries are
    imported: they make hundreds of thousands of objects and no garbage, and collecting
    through them took about 0.35 s of a 2-core CPU's start (torch, pandas, typer, rich).
    :func:`kdcrowd.cli.main` freezes what they made and turns the collector back on."""
    gc.disable()
    from .cli import main

    main()


if __name__ == "__main__":
    run()
