"""An argument parser whose errors are one line on stderr and exit code 2.

argparse's default prints the whole usage before the error; the contract wants one line that
names the bad flag, the same as a bad setting.
"""

from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """``error`` prints ``<prefix>: <message>`` and exits 2."""

    def __init__(self, *, error_prefix: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.error_prefix = error_prefix

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.error_prefix}: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
