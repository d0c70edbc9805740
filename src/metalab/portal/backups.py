"""The portal's Backups page (issue 21): her own snapshots (time, short id) and "restore this folder" into a new
dated folder of her home, through the broker (metalab.brokerapi.client.backup_snapshots / backup_restore). The page
is not there (404) and not linked when the broker has no backups configured."""

from __future__ import annotations

from typing import Any, Callable

from flask import Flask, abort, render_template

from metalab.brokerapi.client import BrokerClient, BrokerError, backup_restore, backup_snapshots
from metalab.portal.auth import Identity
from metalab.portal.forms import RestoreForm

# The page's HTTP status for a failed restore, by the broker's error code (others: the app's error page).
RESTORE_STATUS = {"bad-request": 400, "refused": 409, "busy": 409, "timeout": 202}


def register_backups(
    app: Flask,
    broker: BrokerClient,
    login_required: Callable[[Any], Any],
    slow: Callable[[Any], Any],
    own_user_only: Callable[[Identity], None],
) -> None:
    def backups_page(
        ident: Identity, form: RestoreForm, result: Any = None, error: Any = None, status: int = 200
    ) -> Any:
        try:
            data = backup_snapshots(broker, ident.ticket)
        except BrokerError as exc:
            if exc.code in ("unauthorized", "forbidden"):
                raise
            data, error, status = {"configured": True, "snapshots": []}, error or str(exc), 503
        if not data.get("configured"):
            abort(404)
        page = render_template("backups.html", snapshots=data["snapshots"], form=form, result=result, error=error)
        return page, status

    @app.get("/backups")
    @login_required
    def backups(ident: Identity) -> Any:
        return backups_page(ident, RestoreForm())

    @app.post("/backups/restore")
    @slow
    @login_required
    def backups_restore(ident: Identity) -> Any:
        own_user_only(ident)
        form = RestoreForm()
        if not form.validate_on_submit():
            if form.csrf_token.errors:
                abort(400)
            problems = "; ".join(f"{name}: {m}" for name, msgs in form.errors.items() for m in msgs)
            return backups_page(ident, form, error=problems, status=400)
        try:
            result = backup_restore(broker, ident.ticket, form.snapshot.data or None, (form.path.data or "").strip())
        except BrokerError as exc:
            if exc.code == "timeout":
                message = "the restore takes a while and goes on; its folder appears in restored/ in your home"
                return backups_page(ident, form, error=message, status=202)
            if exc.code not in RESTORE_STATUS:
                raise
            return backups_page(ident, form, error=str(exc), status=RESTORE_STATUS[exc.code])
        return backups_page(ident, RestoreForm(formdata=None), result=result)
