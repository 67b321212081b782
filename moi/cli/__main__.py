"""``python -m moi.cli`` (as before the layers): the ``moi`` command."""

from moi.cli import main

if __name__ == "__main__":
    main()
