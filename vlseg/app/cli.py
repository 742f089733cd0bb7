"""`vlseg serve`: build the app from command-line arguments and the environment, print the URL.

The only place the app reads the environment: ``VLSEG_AUTH=user:password`` (or ``--auth-file``).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vlseg.app import logging as app_logging
from vlseg.app.security import AppConfig, is_local_host, load_auth

DEFAULT_ROOT = Path("~/.cache/vlseg")


def config_from_args(args: argparse.Namespace, environ: dict[str, str] | os._Environ = os.environ
                     ) -> AppConfig:
    root = Path(getattr(args, "outputs", None) or DEFAULT_ROOT / "app")
    samples = Path(getattr(args, "samples", None) or DEFAULT_ROOT / "samples")
    kwargs = {}
    for name, attr in (("max_file_size_mb", "max_file_mb"), ("queue_max_size", "queue_size"),
                       ("temp_ttl_s", "temp_ttl")):
        value = getattr(args, attr, None)
        if value is not None:
            kwargs[name] = value
    return AppConfig(
        output_root=root, samples_dir=samples, host=args.host, port=args.port, model=args.model,
        device=args.device, auth=load_auth(environ.get("VLSEG_AUTH"), getattr(args, "auth_file", None)),
        **kwargs,
    )


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    config = config_from_args(args)
    app_logging.configure()
    if not is_local_host(config.host) and config.auth is None:
        print(f"vlseg serve: warning: listening on {config.host} without --auth-file/VLSEG_AUTH; "
              "anyone who can reach this port can use the app", file=sys.stderr)
    from vlseg.app.server import create_app

    print("vlseg serve: loading the model ...", file=sys.stderr, flush=True)
    app = create_app(config)
    url = app.launch()
    ready = len(app.samples.ready())
    print(f"vlseg serve: running on {url}  (Ctrl+C to stop)", flush=True)
    if ready < len(app.samples.names):
        print(f"vlseg serve: writing {len(app.samples.names) - ready} sample case(s) to "
              f"{config.samples_dir} in the background", file=sys.stderr, flush=True)
    try:
        app.blocks.block_thread()
    finally:
        app.close()
    return 0
