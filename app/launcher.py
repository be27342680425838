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
    parser.add_argument("--prefix", help="data folder (default $XDG_DATA_HOME or ~/.local/share)")
    parser.add_argument("--uninstall", action="store_true",
                        help="remove the entry, icons and metadata that install-desktop wrote")
    args = parser.parse_args(argv)
    from graftlab.app.desktop_install import install, uninstall

    if args.uninstall:
        removed = uninstall(args.prefix)
        for path in removed:
            print(f"removed {path}")
        if not removed:
            print("nothing to remove: Graftlab's desktop entry is not installed there")
        return 0
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
    if args[0] == "gui":  # `graftlab gui FILES...`: the window, opening the given files
        from graftlab.app.__main__ import main as gui_main

        return gui_main(args[1:])
    from graftlab.core.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
