"""``--help`` for every benchmark: the module's whole docstring (what runs, and what each compared
server or baseline is) and every option's default."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's layout and appends ``(default: …)`` to every option that has one."""

    def add_argument(self, action: argparse.Action) -> None:
        default = action.default
        if action.option_strings and action.nargs != 0 and default not in (None, argparse.SUPPRESS) and \
                "%(default)" not in (action.help or ""):
            action.help = (action.help + " " if action.help else "") + "(default: %(default)s)"
        super().add_argument(action)


def parser(doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter)
