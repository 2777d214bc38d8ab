"""``deepseek-sidecar run`` and ``deepseek-sidecar check-config``.

Parse flags, merge them with the environment and the config file, configure logging, run.
A settings error prints one line naming the key and the bad value and exits 2, before
anything is started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from typing import Any

import orjson

from sidecar.accounting.catalogue import Catalogue, CatalogueError
from sidecar.cli.parser import EXIT_USAGE, OneLineParser
from sidecar.settings import OPTIONS, Settings, SettingsError, load

EXIT_SETTINGS = EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        error_prefix="deepseek-sidecar",
        prog="deepseek-sidecar run",
        description="Transparent observability proxy for DeepSeek and OpenAI-compatible APIs.",
    )
    for option in OPTIONS:
        if option.flag:
            parser.add_argument(
                option.flag,
                dest=option.name,
                metavar=option.metavar,
                default=None,
                help=f"{option.help} (env {option.env})",
            )
    return parser


def settings_from(argv: list[str], environ: Mapping[str, str]) -> Settings:
    flags: dict[str, Any] = vars(build_parser().parse_args(argv))
    return load(flags, environ)


def main(argv: list[str]) -> int:
    try:
        settings = settings_from(argv, os.environ)
        catalogue = load_catalogue(settings)
    except SettingsError as exc:
        print(f"deepseek-sidecar: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    from sidecar.app import serve

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        run(serve(settings, catalogue))
    except SettingsError as exc:  # e.g. the port is taken: nothing was started
        print(f"deepseek-sidecar: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    return 0


def load_catalogue(settings: Settings) -> Catalogue:
    """The built-in catalogue, or the file named by ``--catalogue`` (errors are settings errors)."""
    if settings.catalogue is None:
        return Catalogue.builtin()
    try:
        return Catalogue.from_file(settings.catalogue)
    except CatalogueError as exc:
        raise SettingsError(f"--catalogue: {exc}") from None


def check_config_main(argv: list[str]) -> int:
    """Validate FILE (with the environment applied too) and print the effective settings."""
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: deepseek-sidecar check-config FILE", file=sys.stderr)
        return EXIT_SETTINGS
    try:
        settings = load({"config": argv[0]}, os.environ)
        load_catalogue(settings)
    except SettingsError as exc:
        print(f"deepseek-sidecar: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    sys.stdout.buffer.write(orjson.dumps(settings.masked(), option=orjson.OPT_INDENT_2) + b"\n")
    return 0
