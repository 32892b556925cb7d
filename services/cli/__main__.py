"""``python -m services.cli``: the same as the ``careplan`` command."""

from services.cli import main

if __name__ == "__main__":
    main()
