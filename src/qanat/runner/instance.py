"""Entry point of one service instance process: ``python -m qanat.runner.instance``.

The supervisor opens the listening socket and passes its file descriptor, so
a port is never raced between choosing and binding. Everything the service
needs to find the platform arrives in ``QANAT_*`` environment variables (see
``qanat.runner.env``); ``qanat.Service`` reads them.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qanat.runner.instance")
    parser.add_argument("--app", required=True, help="'package.module:attribute' of the ASGI app")
    parser.add_argument("--fd", type=int, required=True, help="listening socket inherited")
    parser.add_argument("--root", required=True, help="directory the app is imported from")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)

    sys.path.insert(0, args.root)
    import uvicorn

    config = uvicorn.Config(
        args.app,
        fd=args.fd,
        loop="auto",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(max(1, args.drain_timeout)),
        server_header=False,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
