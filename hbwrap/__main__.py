"""Entry point for `python -m hbwrap`."""
from hbwrap.cli import main

if __name__ == "__main__":
    main()
