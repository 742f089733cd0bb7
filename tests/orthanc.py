"""A real PACS for the tests: an Orthanc server with its DICOMweb plugin (Debian packages
``orthanc`` and ``orthanc-dicomweb``, installed by ``.ci/run``), on a free loopback port with
its storage in a temporary folder, HTTP basic authentication on, stopped at the end.

Where the packages are not installed the tests that need it are skipped with that reason; in CI
(``CI`` set) that is a failure instead, so CI never skips them.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")
USER, PASSWORD = "vlseg", "pacs-test-secret-5821"


@dataclass(frozen=True)
class OrthancServer:
    url: str  # the DICOMweb root
    rest: str  # Orthanc's own REST API root
    user: str
    password: str
    process: subprocess.Popen

    @property
    def auth(self) -> str:
        return f"{self.user}:{self.password}"


def missing() -> str | None:
    """Why Orthanc cannot be started here (None: it can)."""
    if not Path(ORTHANC).is_file():
        return "Orthanc is not installed (Debian package 'orthanc'; .ci/run installs it)"
    if plugin() is None:
        return "Orthanc's DICOMweb plugin is not installed (Debian package 'orthanc-dicomweb')"
    return None


def plugin() -> str | None:
    for d in PLUGIN_DIRS:
        for p in sorted(Path(d).glob("libOrthancDicomWeb.so*")) if Path(d).is_dir() else ():
            return str(p)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(folder: Path, *, timeout_s: float = 30.0) -> OrthancServer:
    """Start Orthanc with storage under ``folder``; waits until it answers."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "vlseg-test", "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"), "HttpPort": port, "DicomServerEnabled": False,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD}, "Plugins": [plugin()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "StableAge": 1,
        "HttpTimeout": 60, "ConcurrentJobs": 1, "HttpThreadsCount": 4,
    }
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")
    proc = subprocess.Popen([ORTHANC, str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    log.close()
    rest = f"http://127.0.0.1:{port}"
    server = OrthancServer(url=f"{rest}/dicom-web", rest=rest, user=USER, password=PASSWORD,
                           process=proc)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited ({proc.returncode}): "
                               f"{(folder / 'orthanc.log').read_text()[-800:]}")
        try:
            get(server, "/system")
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    stop(server)
    raise RuntimeError("Orthanc did not answer within 30 s")


def get(server: OrthancServer, path: str):
    """GET on Orthanc's REST API, as JSON."""
    token = b64encode(server.auth.encode()).decode()
    req = urllib.request.Request(server.rest + path, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def stop(server: OrthancServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


def in_ci() -> bool:
    return bool(os.environ.get("CI"))
