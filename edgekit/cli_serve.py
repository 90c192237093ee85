"""The `edgekit serve` verb: serve one tier's part of a partition plan over the Open Inference Protocol."""
from __future__ import annotations

import argparse
import os
import sys
import urllib.parse

from .cli_args import non_negative_int, positive_float, positive_int
from .cli_partition import parse_link
from .errors import InputError


def _endpoints(values: list[str], plan, tier: str) -> dict[str, str]:
    """--next URL (the tier of the plan's next part) or --next TIER=URL, repeatable."""
    k = plan.part_of(tier)
    out = {}
    for v in values:
        name, sep, url = v.partition("=")
        if not sep or "://" in name:
            if k is None or k + 1 >= len(plan.parts):
                continue  # this plan's part of the tier is its last: nothing to forward
            name, url = plan.parts[k + 1].tier, v
        if not url.startswith("http://"):
            raise InputError(f"--next {v}: the URL must start with http://")
        try:
            split = urllib.parse.urlsplit(url)
            split.port  # noqa: B018 (raises on a port that is no number or out of range)
        except ValueError as exc:  # also a broken [IPv6] host
            raise InputError(f"--next {v}: {exc}") from None
        if not split.hostname:
            raise InputError(f"--next {v}: the URL names no host")
        out[name] = url.rstrip("/")
    return out


def port(text: str) -> int:
    """argparse type: a TCP port, 0 (pick a free one) to 65535."""
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return int(text)


def cmd_serve(args: argparse.Namespace) -> int:
    from .runtimes.flow import Chain, TierServer, load_plan

    token = args.token or os.environ.get("EDGEKIT_TOKEN") or None
    next_token = args.next_token or os.environ.get("EDGEKIT_NEXT_TOKEN") or token
    links = args.emulate_links
    if args.link:
        from .runtimes.flow import Link

        links = {(lk.src, lk.dst): Link(lk.rtt_s, lk.bandwidth_bps) for lk in args.link}
    chains = []
    for plan_dir in args.plan:
        plan = load_plan(plan_dir)
        unknown = sorted({t for lk in args.link for t in (lk.src, lk.dst)} - set(plan.tiers))
        if unknown:
            raise InputError(f"--link names tier(s) {unknown} that the plan in {plan_dir} does not have; "
                             f"its tiers are {list(plan.tiers)}")
        chains.append(Chain(plan, args.tier, endpoints=_endpoints(args.next, plan, args.tier),
                            deadline_s=args.deadline, retries=args.retries, slowdown=args.slowdown,
                            links=links, token=next_token))
    server = TierServer(chains, args.host, args.port, token=token, max_request_bytes=args.max_request_bytes,
                        max_json_bytes=args.max_json_bytes, request_timeout=args.request_timeout,
                        max_connections=args.max_connections, log=args.verbose)
    for served in server.models.values():
        later = [p.tier for p in served.chain.plan.parts[served.part + 1:]]
        if not later:
            how = ""
        elif later[0] in served.chain.endpoints:
            how = f"; forwards to {later[0]} at {served.chain.endpoints[later[0]]} (runs {', '.join(later)} itself on failure)"
        else:
            how = f"; no --next URL for {later[0]}: runs {', '.join(later)} itself"
        print(f"  {served.name}: part {served.part} of {served.chain.plan.dir}{how}")
    print(f"serving {len(server.models)} model(s) on {server.url}{'; bearer token required' if token else ''}",
          flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print("warning: listening beyond loopback without --token", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_serve_verbs(verbs: argparse._SubParsersAction) -> None:
    """Register `serve` on the CLI's subparsers."""
    p = verbs.add_parser("serve", help="serve a tier of a partition plan (KServe V2 REST)",
                         description="Serve one tier's part of a plan made by `edgekit partition` as "
                                     "MODEL-TIER over the Open Inference Protocol (KServe V2 REST, JSON and "
                                     "binary tensors). The tier forwards the cut tensors to the next tier "
                                     "(--next) and runs the remaining parts itself when that tier fails.")
    p.add_argument("plan", metavar="DIR", nargs="+",
                   help="plan directory (plan.json and the parts' .onnx files); several plans may share a server")
    p.add_argument("--tier", required=True, help="which tier's part to serve (e.g. edge, cloud)")
    p.add_argument("--port", type=port, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (default: $EDGEKIT_TOKEN if set)")
    p.add_argument("--max-request-bytes", type=non_negative_int, default=64 << 20, metavar="N",
                   help="larger request bodies get 413 (default 64 MiB)")
    p.add_argument("--max-json-bytes", type=non_negative_int, default=8 << 20, metavar="N",
                   help="requests whose JSON part is larger get 413 (default 8 MiB; parsing JSON tensors takes "
                        "many times their size in memory: send large tensors as binary data)")
    p.add_argument("--request-timeout", type=positive_float, default=30.0, metavar="S",
                   help="a request's line, headers and body must arrive within S seconds of its first byte, "
                        "else 408 or the connection is closed; also the idle time of a kept-alive "
                        "connection (default 30)")
    p.add_argument("--max-connections", type=positive_int, default=64, metavar="N",
                   help="connections served at once (one thread each); more get 503 with Retry-After (default 64)")
    p.add_argument("--next", action="append", default=[], metavar="URL|TIER=URL",
                   help="V2 base URL of the next tier (e.g. http://127.0.0.1:8001); repeatable as TIER=URL")
    p.add_argument("--next-token", metavar="T",
                   help="bearer token for the next tier (default: $EDGEKIT_NEXT_TOKEN, else this server's token)")
    p.add_argument("--deadline", type=positive_float, default=2.0, metavar="S",
                   help="seconds to wait for the next tier before running its part here (default 2)")
    p.add_argument("--retries", type=non_negative_int, default=1, help="retries of a refused or 5xx forward (default 1)")
    p.add_argument("--slowdown", type=positive_float, default=1.0, metavar="F",
                   help="emulate a slower tier: stretch compute F times by sleeping (default 1)")
    p.add_argument("--emulate-links", action="store_true",
                   help="sleep the plan's link time (RTT + bytes/bandwidth) on every forward")
    p.add_argument("--link", type=parse_link, action="append", default=[], metavar="A-B:BANDWIDTH,RTT",
                   help="emulate this link with these figures instead of the plan's, e.g. "
                        "edge-cloud:200Mbps,40ms (repeatable; only the links given are emulated)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)

