"""metalab's jupyter_server extension in a real jupyter_server: her status file at <base_url>metalab/status, only
with her token."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

EXTENSION_DIR = Path(__file__).resolve().parents[3] / "roles" / "runtime_image" / "files" / "metalab-jupyterlab"
TOKEN = "a-token-only-she-has-0123456789abcdef"
BASE = "/user/alice/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, token: str = ""):  # type: ignore[no-untyped-def]
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()
    except urllib.error.URLError as exc:  # not listening yet
        return 0, {}, str(exc)


@pytest.fixture(scope="module")
def server(tmp_path_factory):  # type: ignore[no-untyped-def]
    """jupyter_server with the extension enabled the way the runtime image enables it, on a loopback port."""
    tmp = tmp_path_factory.mktemp("jupyter")
    status = tmp / "run-lab" / "metalab-status.json"
    status.parent.mkdir()
    (tmp / "config").mkdir()
    (tmp / "config" / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "ServerApp": {
                    "jpserver_extensions": {"metalab_jupyterlab_status": True},
                    "tornado_settings": {"metalab_status_path": str(status)},
                }
            }
        )
    )
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=str(EXTENSION_DIR),
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_CONFIG_PATH=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        HOME=str(tmp),
    )
    log = open(tmp / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={port}",
         "--ip=127.0.0.1", f"--ServerApp.token={TOKEN}", f"--ServerApp.base_url={BASE}",
         f"--ServerApp.root_dir={tmp}"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}{BASE}"
    try:
        deadline = time.monotonic() + 60
        while get(url + "api/status", TOKEN)[0] != 200:
            assert proc.poll() is None, (tmp / "server.log").read_text()
            assert time.monotonic() < deadline, (tmp / "server.log").read_text()
            time.sleep(0.2)
        yield url, status, tmp / "server.log"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_her_status_file_with_her_token_and_nothing_without_it(server):  # type: ignore[no-untyped-def]
    url, status, log = server
    content = {"session": 7, "user": "alice", "time_left_seconds": 600, "updated": "2026-11-30T15:00:00Z"}
    status.write_text(json.dumps(content))
    code, headers, body = get(url + "metalab/status", TOKEN)
    assert code == 200, (body, log.read_text())
    answer = json.loads(body)
    assert {k: answer[k] for k in content} == content
    assert answer["served"].endswith("Z") and "no-store" in headers["Cache-Control"]
    # the same request without her token (or with another) is refused and shows nothing of the file
    for token in ("", "not-her-token"):
        code, _, body = get(url + "metalab/status", token)
        assert code == 403 and "time_left_seconds" not in body, (token, code, body)


def test_no_status_yet_and_a_link_in_its_place(server, tmp_path):  # type: ignore[no-untyped-def]
    url, status, _ = server
    status.unlink(missing_ok=True)
    code, _, body = get(url + "metalab/status", TOKEN)
    assert code == 404 and "no runtime status yet" in json.loads(body)["message"]
    secret = tmp_path / "elsewhere.json"
    secret.write_text(json.dumps({"not": "hers"}))
    status.symlink_to(secret)  # the guard never leaves a link there; the handler does not follow one either
    code, _, body = get(url + "metalab/status", TOKEN)
    assert code == 503 and "hers" not in body
    status.unlink()
