"""``deepseek-sidecar inject [FILE|-]``: print Kubernetes YAML with the sidecar added.

Like ``linkerd inject``: ``deepseek-sidecar inject app.yaml | kubectl apply -f -``. A bad
input is one line on stderr and exit 2; nothing is printed on stdout then.
"""

from __future__ import annotations

import argparse
import sys

from sidecar.cli.parser import EXIT_USAGE, OneLineParser

try:
    from sidecar.kube.inject import (
        DEFAULT_API_KEY_SECRET,
        DEFAULT_CONFIG_MAP,
        DEFAULT_IMAGE,
        InjectError,
        Options,
        inject,
    )
except ModuleNotFoundError as exc:  # ruamel.yaml is the optional `kube` extra
    raise SystemExit(
        f"deepseek-sidecar inject: needs {exc.name}: pip install 'deepseek-sidecar[kube]'"
    ) from None

EXIT_BAD_INPUT = EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        error_prefix="deepseek-sidecar inject",
        prog="deepseek-sidecar inject",
        description="add the sidecar to every pod template in Kubernetes YAML (to stdout)",
    )
    parser.add_argument("file", nargs="?", default="-", help="YAML file, or - for stdin")
    parser.add_argument(
        "--classic",
        action="store_true",
        help="a regular container (clusters without native sidecars)",
    )
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="sidecar image (%(default)s)")
    parser.add_argument("--upstream", default=None, help="upstream URL (default: the ConfigMap's)")
    parser.add_argument(
        "--config-map", default=DEFAULT_CONFIG_MAP, help="ConfigMap with sidecar.toml (%(default)s)"
    )
    parser.add_argument(
        "--api-key-secret",
        default=DEFAULT_API_KEY_SECRET,
        help="Secret with the API key under `api-key`, optional at run time (%(default)s)",
    )
    return parser


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    options = Options(
        classic=args.classic,
        image=args.image,
        upstream=args.upstream,
        config_map=args.config_map,
        api_key_secret=args.api_key_secret,
    )
    try:
        text = _read(args.file)
        output = inject(text, options)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"deepseek-sidecar inject: {args.file}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InjectError as exc:
        print(f"deepseek-sidecar inject: {args.file}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.stdout.write(output)
    return 0
