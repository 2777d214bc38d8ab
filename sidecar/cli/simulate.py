"""``deepseek-sidecar simulate``: run the simulator on a port until interrupted."""

from __future__ import annotations

import argparse
import sys

from aiohttp import web

from sidecar.simulator.scenario import ScenarioError, from_mapping, load_scenario
from sidecar.simulator.server import build_app


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port); the host may be empty for all interfaces."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"--listen: bad value {value!r} (want HOST:PORT)")
    return host or "0.0.0.0", int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepseek-sidecar simulate", description="DeepSeek-compatible upstream simulator"
    )
    parser.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 8000))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", default="steady", help="a scenario name or a TOML file")
    parser.add_argument("--flavour", choices=("deepseek", "openai"), default=None)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
        if args.flavour is not None:
            scenario = from_mapping({"flavour": args.flavour}, scenario)
    except ScenarioError as exc:
        print(f"deepseek-sidecar simulate: {exc}", file=sys.stderr)
        return 2
    host, port = args.listen
    print(
        f"simulator: scenario {args.scenario}, seed {args.seed}, http://{host}:{port}", flush=True
    )
    web.run_app(build_app(scenario, args.seed), host=host, port=port, print=None)
    return 0
