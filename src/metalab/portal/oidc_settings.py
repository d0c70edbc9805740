"""The portal config's ``auth`` and ``oidc`` entries (metalab.portal.oidc). Standard library only: the portal role
validates portal.json with the host's python3, which has no Flask."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

METHODS = ("password", "oidc")


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret_file: str
    scopes: Tuple[str, ...] = ("openid", "email", "profile")
    ca_file: Optional[str] = None
    label: str = "single sign-on"


def parse_auth_settings(auth: Any, oidc: Any) -> Tuple[Tuple[str, ...], Optional[OidcSettings]]:
    """The portal config's ``auth`` and ``oidc`` entries. ValueError names the bad entry."""
    if isinstance(auth, str):
        auth = [auth]
    if not isinstance(auth, (list, tuple)) or not auth or any(a not in METHODS for a in auth):
        raise ValueError(f"auth: expected a non-empty list of {list(METHODS)}, got {auth!r}")
    if "oidc" not in auth:
        return tuple(auth), None
    if not isinstance(oidc, Mapping):
        raise ValueError("oidc: auth includes oidc, so oidc must be an object {issuer, client_id, ...}")
    unknown = set(oidc) - set(OidcSettings.__dataclass_fields__)
    if unknown:
        raise ValueError(f"oidc: unknown keys {sorted(unknown)}")
    for key in ("issuer", "client_id", "client_secret_file"):
        if not isinstance(oidc.get(key), str) or not oidc[key]:
            raise ValueError(f"oidc.{key}: expected a non-empty string")
    for key in ("client_secret_file", "ca_file"):
        if oidc.get(key) is not None and not os.path.isabs(oidc[key]):
            raise ValueError(f"oidc.{key}: expected an absolute path")
    scopes = oidc.get("scopes", list(OidcSettings.scopes))
    if not isinstance(scopes, list) or "openid" not in scopes or not all(isinstance(s, str) for s in scopes):
        raise ValueError("oidc.scopes: expected a list of scopes that includes openid")
    return tuple(auth), OidcSettings(
        issuer=str(oidc["issuer"]).rstrip("/"),
        client_id=oidc["client_id"],
        client_secret_file=oidc["client_secret_file"],
        scopes=tuple(scopes),
        ca_file=oidc.get("ca_file"),
        label=str(oidc.get("label") or OidcSettings.label),
    )
