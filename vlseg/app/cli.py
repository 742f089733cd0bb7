"""`vlseg serve`: build the app from command-line arguments and the environment, print the URL.

The only place the app reads the environment: ``VLSEG_AUTH=user:password`` (or ``--auth-file``);
and the one that writes it: Gradio's variables (upload cache inside the app's output root).
Everything that needs no model is checked before the model loads: the arguments and
credentials, the output and sample folders (writable folders, not files), and the port.
On Ctrl+C or SIGTERM the server stops and every upload and answer of the run is deleted.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path

from vlseg.app import logging as app_logging
from vlseg.app.security import AppConfig, is_local_host, load_auth
from vlseg.errors import InputError
from vlseg.io.outputs import check_output_dir

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
        device=args.device, fast=bool(getattr(args, "fast", False)), auth=load_auth(environ.get("VLSEG_AUTH"), getattr(args, "auth_file", None)),
        allowed_hosts=tuple(getattr(args, "allowed_host", None) or ()),
        trusted_proxies=tuple(getattr(args, "trusted_proxy", None) or ()), **kwargs,
    )


def precheck(config: AppConfig) -> None:
    """Checks that need no model: output and sample folders writable, the port free."""
    for flag, folder in (("--outputs", config.output_root), ("--samples", config.samples_dir)):
        try:
            check_output_dir(folder)
        except InputError as e:
            raise InputError(f"{flag} {e}") from None
    check_port(config.host, config.port)


def check_port(host: str, port: int) -> None:
    """The address can be bound now (another server on it would make the launch fail after the
    model has loaded)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise InputError(f"--host {host}: cannot be resolved ({e.strerror}); give an address of "
                         "this machine, e.g. 127.0.0.1") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise InputError(f"cannot listen on {host}:{port} ({e.strerror or e}); another server "
                             "may be using it: choose another --port") from None


def _stop_on_sigterm() -> None:
    """SIGTERM stops the server like Ctrl+C, so its uploads are deleted on the way out."""
    def handler(signum, frame):  # noqa: ANN001
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (tests): nothing to install
        pass


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    config = config_from_args(args)
    mcp = bool(getattr(args, "mcp", False))
    if mcp and not is_local_host(config.host):
        raise InputError("--mcp serves tools that read files on this machine; use it with a "
                         "loopback --host (127.0.0.1 or localhost)")
    precheck(config)
    app_logging.configure()
    if not is_local_host(config.host) and config.auth is None:
        print(f"vlseg serve: warning: listening on {config.host} without --auth-file/VLSEG_AUTH; "
              "anyone who can reach this port can use the app", file=sys.stderr)
    if config.host in ("0.0.0.0", "::") and not config.allowed_hosts:
        print("vlseg serve: note: only requests addressed to localhost/127.0.0.1 are answered; add "
              "--allowed-host NAME for each name or address clients use to reach this machine",
              file=sys.stderr)
    from vlseg.app.server import create_app, gradio_environment

    os.environ.update(gradio_environment(config))
    print("vlseg serve: loading the model ...", file=sys.stderr, flush=True)
    app = create_app(config, mcp=mcp)
    _stop_on_sigterm()
    try:
        url = app.launch()
    except BaseException:
        app.close()
        raise
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
