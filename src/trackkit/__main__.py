"""``python -m trackkit``: the ``trackkit`` command line."""

from trackkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
