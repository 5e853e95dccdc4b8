"""Entry point for `python -m hbwrap`."""
from hbwrap.entry import main

if __name__ == "__main__":
    main()
