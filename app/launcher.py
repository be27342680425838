"""The `graftlab` command: the desktop app without arguments, the headless CLI with them.

It lives in `app` because only `app` may import the GUI; the subcommands go straight to
`graftlab.core.cli` and never import Qt (`app/__init__.py` imports nothing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _install_desktop(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="graftlab install-desktop",
                                     description="Add Graftlab to your desktop's app menu.")
    parser.add_argument("--prefix", help="data folder (default ~/.local/share)")
    args = parser.parse_args(argv)
    from graftlab.app.desktop_install import install

    for path in install(args.prefix):
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        from graftlab.app.__main__ import main as gui_main

        return gui_main([])
    if args[0] == "install-desktop":
        return _install_desktop(args[1:])
    from graftlab.core.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
