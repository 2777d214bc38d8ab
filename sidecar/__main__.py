"""Command line: ``deepseek-sidecar [run|simulate|demo|top|check-config|loadgen|inject] ...``.

Each command lives in its own module and exposes ``main(argv) -> int``; this module only
dispatches, so importing the CLI never pulls in the simulator or the terminal view.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, str] = {
    "run": "sidecar.cli.run",
    "check-config": "sidecar.cli.run",
    "simulate": "sidecar.cli.simulate",
    "demo": "sidecar.console.demo",
    "top": "sidecar.console.top",
    "loadgen": "sidecar.console.loadgen",
    "inject": "sidecar.kube.cli",
}

USAGE = """usage: deepseek-sidecar [COMMAND] [OPTIONS]

commands:
  run            the sidecar: proxy port + admin port (default)
  simulate       a DeepSeek-compatible upstream simulator
  demo           simulator + sidecar + traffic + live terminal view
  top            the live view attached to running sidecars
  check-config   validate a config file and print the effective settings
  loadgen        send the demo's request mix to a sidecar (no live view)
  inject         add the sidecar to Kubernetes workloads in YAML

'deepseek-sidecar COMMAND --help' describes each command."""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command = "run"
    if args and not args[0].startswith("-"):
        command = args.pop(0)
    if command not in COMMANDS:
        print(f"deepseek-sidecar: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command])
    if command == "check-config":
        return int(module.check_config_main(args))
    return int(module.main(args))


if __name__ == "__main__":
    sys.exit(main())
