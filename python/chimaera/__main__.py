"""``python -m chimaera``: the client from the shell.

    python -m chimaera ping [-n COUNT] [--timeout S] [--json] [--config FILE]
    python -m chimaera pools [--json] [--config FILE]

Exit status: 0 done; 1 a task failed or a ping was lost; 3 no runtime runs
(as ``chimaera status``); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import List, Optional

from . import ChimaeraError, Client, NotRunning, TimedOut

EXIT_FAILED = 1
EXIT_NOT_RUNNING = 3


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def _ping(client: Client, args: argparse.Namespace) -> int:
    rtts: List[float] = []
    lost = 0
    for seq in range(args.count):
        try:
            rtt = client.ping(timeout=args.timeout)
        except TimedOut:
            lost += 1
            if not args.json:
                print(f"no reply from runtime pid {client.runtime_pid}: seq={seq} (lost after {args.timeout} s)")
            continue
        rtts.append(rtt)
        if not args.json and not args.quiet:
            print(f"reply from runtime pid {client.runtime_pid}: seq={seq} time={_us(rtt)}")
    if args.json:
        print(
            json.dumps(
                {
                    "runtime_pid": client.runtime_pid,
                    "answered": len(rtts),
                    "lost": lost,
                    "min_ns": round(min(rtts) * 1e9) if rtts else None,
                    "median_ns": round(statistics.median(rtts) * 1e9) if rtts else None,
                    "max_ns": round(max(rtts) * 1e9) if rtts else None,
                }
            )
        )
    elif rtts:
        print(
            f"{args.count} pings, {len(rtts)} answered, {lost} lost: "
            f"min {_us(min(rtts))}, median {_us(statistics.median(rtts))}, max {_us(max(rtts))}"
        )
    else:
        print(f"{args.count} pings, none answered")
    return EXIT_FAILED if lost else 0


def _pools(client: Client, args: argparse.Namespace) -> int:
    pools = client.pools()
    if args.json:
        print(json.dumps([{"id": p.id, "name": p.name, "module": p.module} for p in pools]))
    else:
        for p in pools:
            print(f"{p.id:>5}  {p.name:<24} {p.module}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chimaera", description="The chimaera client from the shell.")
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="the runtime's configuration file (default: $CHI_SERVER_CONF, else "
        "/etc/chimaera/chimaera_config.yaml when present, else the defaults)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ping = sub.add_parser("ping", help="round trips of admin no-ops")
    ping.add_argument("-n", "--count", type=int, default=1, help="how many pings (default 1)")
    ping.add_argument("--timeout", type=float, default=5.0, help="seconds before a ping counts as lost (default 5)")
    ping.add_argument("--json", action="store_true", help="print one JSON object")
    ping.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    pools = sub.add_parser("pools", help="the runtime's pools")
    pools.add_argument("--json", action="store_true", help="print a JSON list")
    args = parser.parse_args(argv)
    if args.command == "ping" and args.count < 1:
        parser.error("-n/--count must be at least 1")
    try:
        client = Client(config=args.config)
        if args.command == "ping":
            return _ping(client, args)
        return _pools(client, args)
    except NotRunning as e:
        print(f"chimaera: {e}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except ChimaeraError as e:
        print(f"chimaera: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
