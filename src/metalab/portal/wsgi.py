"""WSGI entry point: ``gunicorn metalab.portal.wsgi:app`` (settings from $METALAB_PORTAL_CONFIG)."""

from metalab.portal.app import create_app

app = create_app()
