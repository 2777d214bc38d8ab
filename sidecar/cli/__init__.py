"""Command modules: each parses its own arguments and exposes ``main(argv) -> int``."""
