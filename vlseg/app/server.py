"""Assemble and launch the app: model, sessions, samples, janitors, Gradio Blocks.

    config = AppConfig(output_root=..., samples_dir=...)
    os.environ.update(gradio_environment(config))   # the entry point's step (Gradio reads it)
    app = create_app(config)
    url = app.launch()          # non-blocking; app.close() stops it and deletes every upload

Uploads live in two places, both under the app's output root: Gradio's upload cache
(``gradio/``: each upload is first a ``tmp*`` file, then moved into a hashed folder) and the
sessions' folders (extracted zips, answers). Both are swept by age while the app runs (a failed
or refused upload leaves its ``tmp*`` file behind; an empty one is removed after a minute) and
emptied when it stops.
"""
from __future__ import annotations

import inspect
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vlseg.app import security
from vlseg.app.logging import log_event, new_request_id
from vlseg.app.samples import PairWriter, SampleLibrary, SampleWriter
from vlseg.app.security import AppConfig
from vlseg.app.sessions import SessionStore, fork_segmenter
from vlseg.app.uploads import Janitor


EMPTY_UPLOAD_GRACE_S = 60.0  # an empty tmp* upload file older than this is an orphan


class UploadCacheJanitor(Janitor):
    """The Janitor for Gradio's upload cache: also removes empty ``tmp*`` files (uploads that
    were refused or broke off before any byte arrived) once they are a minute old."""

    def sweep(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        n = 0
        if self.root.is_dir():
            for child in self.root.glob("tmp*"):
                try:
                    st = child.lstat()
                    if child.is_file() and st.st_size == 0 and now - st.st_mtime > EMPTY_UPLOAD_GRACE_S:
                        child.unlink()
                        n += 1
                except OSError:
                    continue
        return n + super().sweep(now)


class IdleTrimmer:
    """A daemon thread that lets the session store give freed heap back to the OS once the app
    has been quiet for ``quiet_s`` seconds (``SessionStore.idle``)."""

    def __init__(self, store: SessionStore, *, quiet_s: float = 30.0, interval_s: float = 10.0) -> None:
        self.store = store
        self.quiet_s = quiet_s
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="vlseg-idle-trim", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.store.idle(self.quiet_s)


def remove_contents(folder: Path) -> int:
    """Delete everything inside ``folder`` (not the folder itself); return how many entries."""
    n = 0
    if not folder.is_dir():
        return 0
    for child in folder.iterdir():
        try:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
            n += 1
        except OSError:
            continue
    return n


@dataclass
class VlsegApp:
    config: AppConfig
    blocks: Any  # gr.Blocks
    store: SessionStore
    samples: SampleLibrary
    janitor: Janitor
    cache_janitor: Janitor | None = None
    trimmer: IdleTrimmer | None = None
    mcp: bool = False  # also serve the MCP tools at /gradio_api/mcp/ (vlseg serve --mcp)
    url: str | None = None
    _closed: bool = field(default=False, repr=False)

    def launch(self, *, block: bool = False) -> str:
        """Start the server (queue + secure launch arguments); return the local URL."""
        self.samples.start_background()
        for janitor in self._janitors():
            janitor.sweep()  # what an earlier run that was killed left behind
            janitor.start()
        if self.trimmer is not None:
            self.trimmer.start()
        self.blocks.queue(**security.queue_kwargs(self.config))
        kwargs = security.launch_kwargs(self.config)
        kwargs["app_kwargs"] = {"middleware": security.middleware(self.config)}
        kwargs["mcp_server"] = self.mcp  # mounted on this same app: behind the same Host checks
        if "_frontend" in inspect.signature(self.blocks.launch).parameters:
            # Gradio's own start-up probe gives up after one 3 s timeout (busy machines); it
            # would then ask for share=True. We probe with patience instead (wait_until_up).
            kwargs["_frontend"] = False
        _, local_url, _ = self.blocks.launch(prevent_thread_lock=True, **kwargs)
        wait_until_up(local_url)
        self.url = local_url
        log_event(new_request_id(), op="launch", port=self.config.port,
                  host_is_local=security.is_local_host(self.config.host))
        if block:
            self.blocks.block_thread()
        return local_url

    def _janitors(self) -> list[Janitor]:
        return [j for j in (self.janitor, self.cache_janitor) if j is not None]

    def close(self) -> None:
        """Stop the server and delete every upload and answer of this run (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for janitor in self._janitors():
            janitor.stop()
        if self.trimmer is not None:
            self.trimmer.stop()
        try:
            self.blocks.close()
        finally:
            n = remove_contents(self.config.gradio_temp_dir) + remove_contents(self.config.sessions_dir)
            log_event(new_request_id(), op="close", n_deleted=n)


def wait_until_up(url: str, *, timeout_s: float = 60.0) -> None:
    """Wait until the server answers on ``url`` (any HTTP status); raise if it never does."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.head(url, timeout=5.0)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start answering on {url} within {timeout_s:.0f} s")
            time.sleep(0.5)


def gradio_environment(config: AppConfig) -> dict[str, str]:
    """The variables that put Gradio's upload cache (and example cache) inside the app's output
    root. The entry point sets them (``os.environ.update(...)``) before :func:`create_app`:
    Gradio reads them from the environment only, when the Blocks and the server are built."""
    return {"GRADIO_TEMP_DIR": str(config.gradio_temp_dir),
            "GRADIO_EXAMPLES_CACHE": str(config.output_root / "examples-cache")}


def create_app(config: AppConfig, *, segmenter: Any = None,
               sample_writer: SampleWriter | None = None, pair_writer: PairWriter | None = None,
               fork: Callable[[Any], Any] = fork_segmenter, mcp: bool = False) -> VlsegApp:
    """Build everything; ``segmenter`` defaults to ``Segmenter.from_pretrained(config.model)``.
    ``sample_writer`` / ``pair_writer`` stand in for the phantom generators (tests); with a sample
    writer and no pair writer no sample pairs are made.
    ``mcp``: add the MCP tools (``vlseg.mcp_server``) with their own forked segmenter.
    Gradio must already keep its uploads in ``config.gradio_temp_dir`` (:func:`gradio_environment`):
    the app sweeps them there and deletes them when it stops."""
    from gradio.utils import get_upload_folder

    if Path(get_upload_folder()).resolve() != config.gradio_temp_dir:
        raise RuntimeError(f"Gradio keeps uploads in {get_upload_folder()}, not in the app's "
                           f"{config.gradio_temp_dir}: run os.environ.update(vlseg.app.server."
                           "gradio_environment(config)) before create_app")
    security.prepare_dirs(config)
    if segmenter is None:
        from vlseg.segmenter import Segmenter

        segmenter = Segmenter.from_pretrained(config.model, device=config.device, fast=config.fast)
    if getattr(getattr(segmenter, "predictor", None), "refines", False):
        # A server lives long: MONAI's inferer (seconds to import) loads in the background now,
        # not in the first visitor's first 1 mm answer
        from vlseg.model.monai_inferer import preload_inferer

        preload_inferer()
    from vlseg.app.ui import build_blocks

    store = SessionStore(base=segmenter, output_dir=config.sessions_dir,
                         max_cached=config.max_cached_sessions, max_sessions=config.max_sessions,
                         max_query_chars=config.max_query_chars, fork=fork)
    samples = SampleLibrary(root=config.samples_dir, seeds=config.sample_seeds,
                            spacing_mm=config.sample_spacing_mm, writer=sample_writer,
                            pairs=config.sample_pairs if sample_writer is None or pair_writer is not None else 0,
                            pair_writer=pair_writer)
    janitor = Janitor(root=config.sessions_dir, ttl_s=config.temp_ttl_s,
                      interval_s=config.cleanup_interval_s)
    cache_janitor = UploadCacheJanitor(root=config.gradio_temp_dir, ttl_s=config.temp_ttl_s,
                                       interval_s=config.cleanup_interval_s)
    blocks = build_blocks(store=store, samples=samples, blocks_kwargs=security.blocks_kwargs(config))
    if mcp:
        from vlseg.mcp_server import CaseTools, add_gradio_tools

        add_gradio_tools(blocks, CaseTools(segmenter=fork(segmenter),
                                           out_root=config.sessions_dir / "mcp"))
    return VlsegApp(config=config, blocks=blocks, store=store, samples=samples, janitor=janitor,
                    cache_janitor=cache_janitor, trimmer=IdleTrimmer(store), mcp=mcp)
