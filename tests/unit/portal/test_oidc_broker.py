"""The broker's ``login.oidc``: an ID token signed by a test key, whose JWKS a loopback provider serves. Each bad
token or identity is refused with a clear message and no ticket; the legitimate one gets a ticket that works."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from metalab.brokerapi.client import BrokerError
from metalab.host.broker.config import BrokerConfigError, parse_config
from metalab.host.broker.oidc import parse_oidc

from .conftest import LabEnv

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CLIENT_ID = "metalab-portal"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64int(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def sign(claims: Dict[str, Any], key: Any = KEY, alg: str = "RS256", kid: str = "k1") -> str:
    head = b64(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    data = f"{head}.{body}".encode()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
    else:
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64(sig)}"


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    """A loopback "provider" that serves only discovery and the JWKS (the broker fetches both itself)."""
    numbers = KEY.public_key().public_numbers()
    docs: Dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps(docs.get(self.path, {})).encode()
            self.send_response(200 if self.path in docs else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    docs["/.well-known/openid-configuration"] = {"issuer": url, "jwks_uri": url + "/jwks"}
    docs["/jwks"] = {"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "n": b64int(numbers.n), "e": "AQAB"}]}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture
def sso(env: LabEnv, issuer: str) -> LabEnv:
    env.broker_data["oidc"] = {
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "allowed_domains": ["lab.test"],
        "allowed_groups": ["lab-users"],
    }
    env.start_broker()
    return env


def claims(issuer: str, email: str = "alice@lab.test", nonce: str = "n-1", **extra: Any) -> Dict[str, Any]:
    now = int(time.time())
    base = {"iss": issuer, "aud": CLIENT_ID, "sub": f"s-{email}", "email": email, "email_verified": True,
            "groups": ["lab-users"], "iat": now, "exp": now + 300, "nonce": nonce}  # fmt: skip
    base.update(extra)
    return base


def refused(env: LabEnv, token: str, nonce: str = "n-1") -> Tuple[str, str]:
    with pytest.raises(BrokerError) as info:
        env.client().call("login.oidc", id_token=token, nonce=nonce)
    return info.value.code, str(info.value)


def test_a_valid_token_of_a_lab_user_gets_a_ticket_that_works(sso: LabEnv, issuer: str) -> None:
    result = sso.client().call("login.oidc", id_token=sign(claims(issuer)), nonce="n-1")
    assert result["user"] == "alice" and result["ticket"]
    assert sso.client().call("whoami", ticket=result["ticket"])["user"] == "alice"
    # The same token again (a replay) is refused: each token logs in once.
    code, message = refused(sso, sign(claims(issuer)))
    assert code == "invalid" and "used already" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"iss": "https://evil.test"}, "comes from 'https://evil.test'"),
        ({"aud": "another-app"}, "issued for another application"),
        ({"aud": [CLIENT_ID, "another-app"], "azp": "another-app"}, "issued for another application"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "has expired"),
        ({"iat": int(time.time()) + 3600, "exp": int(time.time()) + 7200}, "not valid yet"),
        ({"nonce": "someone-elses"}, "does not belong to this login"),
        ({"email": "mallory@lab.test"}, "your account mallory@lab.test is not a user of this lab"),
        ({"email": "alice@evil.test"}, "your account alice@evil.test is not from a domain this lab accepts"),
        ({"groups": ["staff"]}, "your account alice@lab.test is not in a group allowed to use this lab"),
        ({"groups": None}, "is not in a group allowed"),
        ({"email": "Alice.Smith@lab.test"}, "does not name a valid lab user ('Alice.Smith')"),
        ({"email": "root@lab.test"}, "root@lab.test is not a user of this lab"),
        ({"email_verified": False}, "is not verified"),
        ({"email": None}, "sent no 'email'"),
    ],
)
def test_bad_tokens_and_identities_are_refused_without_a_ticket(
    sso: LabEnv, issuer: str, change: Dict[str, Any], expected: str
) -> None:
    code, message = refused(sso, sign(claims(issuer, **change)))
    assert code == "invalid" and expected in message


def test_bad_signatures_are_refused(sso: LabEnv, issuer: str) -> None:
    good = sign(claims(issuer))
    head, body, sig = good.split(".")
    forged_body = b64(json.dumps(claims(issuer, email="bob@lab.test")).encode())
    for token in (
        f"{head}.{forged_body}.{sig}",  # bob's claims under alice's signature
        sign(claims(issuer), key=OTHER_KEY),  # signed by a key the provider does not publish under k1
        sign(claims(issuer), kid="k2"),  # a kid the provider does not publish
        sign(claims(issuer), key=ec.generate_private_key(ec.SECP256R1()), alg="ES256"),
        f"{head}.{body}.",
        "not-a-jwt",
    ):
        code, message = refused(sso, token)
        assert code == "invalid" and "sign-in token" in message, (token, message)
    # ... and the untouched token still works: the refusals above did not use it up.
    assert sso.client().call("login.oidc", id_token=good, nonce="n-1")["user"] == "alice"


def test_alg_none_is_refused(sso: LabEnv, issuer: str) -> None:
    head = b64(json.dumps({"alg": "none", "kid": "k1"}).encode())
    body = b64(json.dumps(claims(issuer)).encode())
    code, message = refused(sso, f"{head}.{body}.")
    assert code == "invalid" and "only RS256" in message


def test_a_present_user_without_a_password_gets_a_ticket_and_a_password_ends_it(sso: LabEnv, issuer: str) -> None:
    from metalab.host.broker.auth import AuthStore

    path = Path(sso.broker_config.passwords)
    passwords = json.loads(path.read_text())
    passwords["users"].pop("bob")
    path.write_text(json.dumps(passwords))
    ticket = sso.client().call("login.oidc", id_token=sign(claims(issuer, "bob@lab.test", "n-2")), nonce="n-2")
    assert sso.client().call("whoami", ticket=ticket["ticket"])["user"] == "bob"
    AuthStore(sso.broker_config).set_password("bob", "bob-new-secret-1")
    with pytest.raises(BrokerError) as info:
        sso.client().call("whoami", ticket=ticket["ticket"])
    assert info.value.code == "unauthorized"


def test_without_oidc_config_the_op_is_refused(env: LabEnv, issuer: str) -> None:
    code, message = refused(env, sign(claims(issuer)))
    assert code == "bad-request" and "not configured" in message


def test_config_errors_name_the_entry(env: LabEnv) -> None:
    for raw, expected in (
        ({"client_id": "x"}, "oidc.issuer"),
        ({"issuer": "https://idp.test"}, "oidc.client_id"),
        ({"issuer": "https://idp.test", "client_id": "x", "allowed_domains": "lab.test"}, "oidc.allowed_domains"),
        ({"issuer": "https://idp.test", "client_id": "x", "ca_file": "ca.pem"}, "oidc.ca_file"),
        ({"issuer": "https://idp.test", "client_id": "x", "secret": "s"}, "unknown keys ['secret']"),
    ):
        with pytest.raises(BrokerConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
            parse_config(dict(env.broker_data, oidc=raw))
    parsed = parse_oidc({"issuer": "https://idp.test/", "client_id": "x", "allowed_domains": ["Lab.Test"]})
    assert parsed is not None and parsed.issuer == "https://idp.test" and parsed.allowed_domains == ("lab.test",)
