"""Entry script for the PyInstaller build: the same `graftlab` command as the pip install."""

import sys

from graftlab.app.launcher import main

if __name__ == "__main__":
    sys.exit(main())
