"""metalab's jupyter_server extension: her runtime's status (time left, budget left, home usage, the guard's newest
warning) at GET <base_url>metalab/status, for the metalab JupyterLab extension's status bar item and notifications.

The guard writes the file (metalab.host.guard.runtime_status) into her socket directory, which the runtime sees at
/run/lab. The route is authenticated like every JupyterLab API (the front door hands JupyterLab her token; nobody
else's browser gets it); it only ever reads this one file. ``served`` (the server's clock) lets the page count down
without trusting the browser's clock. Installed into the runtime image's venv and enabled in its
jupyter_server_config.json (roles/runtime_image); no dependency beyond jupyter_server.
"""

from __future__ import annotations

import json
import os
import time

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

STATUS_PATH = "/run/lab/metalab-status.json"
MAX_BYTES = 64 * 1024


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class StatusHandler(APIHandler):
    """Her status file as JSON (404 with a message while there is none)."""

    @tornado.web.authenticated
    def get(self) -> None:
        path = self.settings.get("metalab_status_path", STATUS_PATH)
        self.set_header("Cache-Control", "no-store")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, encoding="utf-8") as fh:
                content = json.loads(fh.read(MAX_BYTES))
            if not isinstance(content, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            self.set_status(404)
            self.finish(json.dumps({"message": "no runtime status yet: the guard writes it within a minute"}))
            return
        except (OSError, ValueError) as exc:
            self.set_status(503)
            self.finish(json.dumps({"message": f"the runtime status cannot be read: {exc}"}))
            return
        content["served"] = _iso(time.time())
        self.finish(json.dumps(content))


def _jupyter_server_extension_points() -> list:
    return [{"module": "metalab_jupyterlab_status"}]


def _load_jupyter_server_extension(serverapp) -> None:  # type: ignore[no-untyped-def]
    route = url_path_join(serverapp.web_app.settings["base_url"], "metalab", "status")
    serverapp.web_app.add_handlers(".*$", [(route, StatusHandler)])
    serverapp.log.info("metalab status at %s", route)
