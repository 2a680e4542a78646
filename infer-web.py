"""RVC Workbench web app: parse flags, build the app, launch it."""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="RVC Workbench web app")
    parser.add_argument("--root", default=".", help="project folder holding logs/, weights/, assets (default: .)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--listen", action="store_true", help="bind 0.0.0.0 so other machines can connect")
    parser.add_argument("--port", type=int, default=7865)
    parser.add_argument("--auth", default=None, help="require a login, as user:password")
    parser.add_argument("--max-upload-mb", type=int, default=500, help="largest accepted upload (MB)")
    parser.add_argument("--allow-path", action="append", default=[], help="extra folder that typed paths may use")
    parser.add_argument("--no-auth", action="store_true",
                        help="with --listen: serve without a login on purpose (anyone on the network may use the app)")
    parser.add_argument("--max-audio-minutes", type=float, default=30.0,
                        help="longest input a conversion accepts, in minutes (default 30; the CLI allows 3 h)")
    parser.add_argument("--convert-timeout", type=float, default=1800.0,
                        help="seconds after which a single conversion is ended (default 1800)")
    parser.add_argument("--realtime-remote", action="store_true",
                        help="serve the Realtime tab and the streaming API (/stream/ws) to other machines too (each "
                        "live stream holds a voice in memory; combine with --auth)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tools.web import launch

    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
