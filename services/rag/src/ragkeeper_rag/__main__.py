"""``python -m ragkeeper_rag`` — see :mod:`ragkeeper_rag.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
