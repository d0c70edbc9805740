"""Single sign-on: the broker's own check of an OpenID Connect ID token (op ``login.oidc``), standard library only.

The portal runs the authorization-code flow (Authlib, PKCE, state, nonce) and hands the ID token it got from the
provider's token endpoint to the broker with the nonce it put in the authorization request. The broker does not
trust the portal's word for anything: it fetches the issuer's discovery document and JWKS itself (over https with
the system CAs or ``ca_file``), verifies the token's RS256 signature with the key its ``kid`` names, checks
``iss`` (exactly the configured issuer), ``aud`` (contains the client id; ``azp`` is the client id when there are
several audiences), ``exp``/``iat``/``nbf`` (60 s leeway), the nonce (equal to the one given, and never used
before: a token is good for one login), and then maps the token to a lab user:

- ``username_claim`` (default ``email``) gives a name. A value ``local@domain`` needs its domain in
  ``allowed_domains`` (none configured: such values are refused, so a public provider's ``alice@gmail.com`` never
  becomes the lab's alice) and ``email_verified`` not false; the lab user name is the local part.
- The name must be a valid lab user name and a present user of this lab (the guard's users).
- ``allowed_groups`` (when set): the ``groups_claim`` list must hold one of them.

Only RS256 is accepted (what Keycloak, Entra ID and Google sign ID tokens with by default): RSA PKCS#1 v1.5
verification is a modular exponentiation and a byte comparison that the standard library does exactly; ES256 would
need elliptic-curve arithmetic written here, which is not worth its risk (docs/security.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from metalab.host.broker.errors import ApiError
from metalab.rules import USER_NAME

log = logging.getLogger("metalab.broker")

LEEWAY = 60
JWKS_TTL = 600  # keys are fetched again after this long, and at most once a minute for an unknown kid
MAX_DOC = 256 * 1024
# DER prefix of a SHA-256 DigestInfo (RFC 8017, 9.2 note 1).
SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    username_claim: str = "email"
    allowed_domains: Tuple[str, ...] = ()
    allowed_groups: Tuple[str, ...] = ()
    groups_claim: str = "groups"
    ca_file: Optional[str] = None


def parse_oidc(raw: Any) -> Optional[OidcConfig]:
    """The broker config's ``oidc`` object, or None when absent. ValueError names the bad entry."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError("oidc: expected an object {issuer, client_id, ...}")
    unknown = set(raw) - set(OidcConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"oidc: unknown keys {sorted(unknown)}")
    issuer = raw.get("issuer")
    if not isinstance(issuer, str) or not issuer.startswith(("https://", "http://")):
        raise ValueError(f"oidc.issuer: expected an https:// URL, got {issuer!r}")
    for key in ("client_id", "username_claim", "groups_claim"):
        value = raw.get(key, getattr(OidcConfig, key, None))
        if not isinstance(value, str) or not value:
            raise ValueError(f"oidc.{key}: expected a non-empty string")
    lists = {}
    for key in ("allowed_domains", "allowed_groups"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"oidc.{key}: expected a list of strings")
        lists[key] = tuple(v.lower() for v in value) if key == "allowed_domains" else tuple(value)
    ca_file = raw.get("ca_file")
    if ca_file is not None and not (isinstance(ca_file, str) and ca_file.startswith("/")):
        raise ValueError("oidc.ca_file: expected an absolute path")
    return OidcConfig(
        issuer=issuer.rstrip("/"),
        client_id=raw["client_id"],
        username_claim=raw.get("username_claim", OidcConfig.username_claim),
        groups_claim=raw.get("groups_claim", OidcConfig.groups_claim),
        ca_file=ca_file,
        **lists,
    )


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64int(text: str) -> int:
    return int.from_bytes(_unb64(text), "big")


def rs256_valid(signing_input: bytes, signature: bytes, n: int, e: int) -> bool:
    """RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 8.2.2): s^e mod n must be the exact encoding of the digest."""
    k = (n.bit_length() + 7) // 8
    if k < 256 or len(signature) != k:  # 2048-bit keys at least
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    em = pow(s, e, n).to_bytes(k, "big")
    digest_info = SHA256_PREFIX + hashlib.sha256(signing_input).digest()
    expected = b"\x00\x01" + b"\xff" * (k - len(digest_info) - 3) + b"\x00" + digest_info
    return hmac.compare_digest(em, expected)


Fetch = Callable[[str], Any]


class OidcVerifier:
    def __init__(self, config: OidcConfig, fetch: Optional[Fetch] = None) -> None:
        self.config = config
        self._fetch = fetch or self._fetch_json
        self._keys: Dict[str, Dict[str, Any]] = {}
        self._keys_at = 0.0
        self._lock = threading.Lock()
        self._used: Dict[str, float] = {}  # nonce -> token expiry: each token logs in once

    # -- the provider's keys --------------------------------------------------------------------------------

    def _fetch_json(self, url: str) -> Any:
        context = ssl.create_default_context(cafile=self.config.ca_file)
        with urllib.request.urlopen(url, timeout=10, context=context) as response:  # noqa: S310 (https/http only)
            return json.loads(response.read(MAX_DOC).decode("utf-8"))

    def _load_keys(self) -> None:
        issuer = self.config.issuer
        try:
            meta = self._fetch(issuer + "/.well-known/openid-configuration")
            if not isinstance(meta, dict) or str(meta.get("issuer", "")).rstrip("/") != issuer:
                raise ValueError(f"its discovery document names another issuer ({meta.get('issuer')!r})")
            jwks = self._fetch(str(meta["jwks_uri"]))
            keys = {
                str(k.get("kid", "")): k
                for k in jwks["keys"]
                if isinstance(k, dict) and k.get("kty") == "RSA" and k.get("use", "sig") == "sig"
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("oidc: cannot fetch the keys of %s: %s", issuer, exc)
            message = f"the sign-in provider {issuer} cannot be reached right now; try again later"
            raise ApiError("failure", message) from None
        self._keys, self._keys_at = keys, time.time()

    def _key(self, kid: str) -> Dict[str, Any]:
        with self._lock:
            now = time.time()
            if not self._keys or now - self._keys_at > JWKS_TTL or (kid not in self._keys and now - self._keys_at > 60):
                self._load_keys()
            key = self._keys.get(kid) or (self._keys.get("") if not kid else None)
            if key is None and len(self._keys) == 1 and not kid:
                key = next(iter(self._keys.values()))
        if key is None:
            raise ApiError("invalid", "the sign-in token is signed with a key the provider does not publish")
        return key

    # -- the token ------------------------------------------------------------------------------------------

    def verify(self, id_token: str, nonce: str, now: Optional[float] = None) -> Dict[str, Any]:
        """The token's claims after checking its signature, issuer, audience, times and nonce."""
        now = time.time() if now is None else now
        bad = ApiError("invalid", "the sign-in token is not valid; log in again")
        try:
            head_b64, body_b64, sig_b64 = id_token.split(".")
            header = json.loads(_unb64(head_b64))
            claims = json.loads(_unb64(body_b64))
            signature = _unb64(sig_b64)
        except (ValueError, TypeError):
            raise bad from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise bad
        if header.get("alg") != "RS256":
            raise ApiError("invalid", f"the sign-in token is signed with {header.get('alg')!r}; only RS256 is accepted")
        key = self._key(str(header.get("kid", "")))
        try:
            n, e = _b64int(key["n"]), _b64int(key["e"])
        except (KeyError, ValueError, TypeError):
            raise bad from None
        if not rs256_valid(f"{head_b64}.{body_b64}".encode("ascii"), signature, n, e):
            log.warning("oidc: a token with a bad signature (kid %r)", header.get("kid"))
            raise bad
        cfg = self.config
        if str(claims.get("iss", "")).rstrip("/") != cfg.issuer:
            raise ApiError("invalid", f"the sign-in token comes from {claims.get('iss')!r}, not from {cfg.issuer}")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if cfg.client_id not in audiences or (len(audiences) > 1 and claims.get("azp") != cfg.client_id):
            raise ApiError("invalid", "the sign-in token was issued for another application")
        try:
            exp, iat = float(claims["exp"]), float(claims.get("iat", now))
            nbf = float(claims.get("nbf", now))
        except (KeyError, TypeError, ValueError):
            raise bad from None
        if exp + LEEWAY < now:
            raise ApiError("invalid", "the sign-in token has expired; log in again")
        if iat - LEEWAY > now or nbf - LEEWAY > now:
            raise ApiError("invalid", "the sign-in token is not valid yet (is the host's clock right?)")
        if not nonce or not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(claims["nonce"], nonce):
            raise ApiError("invalid", "the sign-in token does not belong to this login; log in again")
        with self._lock:
            self._used = {k: v for k, v in self._used.items() if v + LEEWAY >= now}
            if nonce in self._used:
                raise ApiError("invalid", "this sign-in token was used already; log in again")
            self._used[nonce] = exp
        return claims

    def lab_user(self, claims: Mapping[str, Any], present: Callable[[str], bool]) -> str:
        """The lab user the claims map to; ApiError("invalid", message naming the account) otherwise."""
        cfg = self.config
        value = claims.get(cfg.username_claim)
        if not isinstance(value, str) or not value:
            raise ApiError("invalid", f"the sign-in provider sent no {cfg.username_claim!r} for your account")
        shown = value[:128]
        name = value
        if "@" in value:
            name, _, domain = value.rpartition("@")
            if domain.lower() not in cfg.allowed_domains:
                raise ApiError("invalid", f"your account {shown} is not from a domain this lab accepts")
            if cfg.username_claim == "email" and claims.get("email_verified") is False:
                raise ApiError("invalid", f"your account's e-mail address {shown} is not verified at the provider")
        if not USER_NAME.fullmatch(name):
            raise ApiError("invalid", f"your account {shown} does not name a valid lab user ({name[:64]!r})")
        if cfg.allowed_groups:
            groups = claims.get(cfg.groups_claim)
            if not isinstance(groups, list) or not set(cfg.allowed_groups) & {g for g in groups if isinstance(g, str)}:
                raise ApiError("invalid", f"your account {shown} is not in a group allowed to use this lab")
        if not present(name):
            raise ApiError("invalid", f"your account {shown} is not a user of this lab")
        return name
