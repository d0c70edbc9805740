"""Authentication backends of the portal.

The portal never decides on its own who a user is: a backend turns what the user presents into an ``Identity``
that carries a broker ticket, and the broker only mints tickets after checking the credential itself. Today there
is one backend, passwords checked by the broker. An OIDC backend fits the same interface: ``begin`` redirects to
the provider, ``complete`` takes the callback and hands the ID token to the broker (a future ``login.oidc``
operation that verifies the token's signature, issuer, audience and the mapped lab user itself) for a ticket.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from metalab.brokerapi.client import BrokerClient


@dataclass(frozen=True)
class Identity:
    user: str
    ticket: str
    admin: bool
    expires: int

    @classmethod
    def from_broker(cls, result: Mapping[str, Any]) -> Identity:
        return cls(str(result["user"]), str(result["ticket"]), bool(result["admin"]), int(result["expires"]))


class AuthBackend(ABC):
    """How users log in. ``password_form``: the login page shows user name and password fields."""

    name: str = "abstract"
    password_form: bool = False

    def login(self, username: str, password: str, client: str = "") -> Identity:
        """CLIENT: the client's address (login throttling is per name and address)."""
        raise NotImplementedError(f"{self.name} does not take passwords")

    def begin(self, next_url: str) -> Optional[str]:
        """An external provider's URL to redirect to (OIDC); None when the portal's own form is used."""
        return None

    def complete(self, params: Mapping[str, str]) -> Identity:
        raise NotImplementedError(f"{self.name} has no callback")

    @abstractmethod
    def logout(self, identity: Identity) -> None: ...


class BrokerPasswordBackend(AuthBackend):
    """Passwords (scrypt hashes, lockout) checked by the broker; the portal never sees a hash."""

    name = "password"
    password_form = True

    def __init__(self, broker: BrokerClient) -> None:
        self.broker = broker

    def login(self, username: str, password: str, client: str = "") -> Identity:
        return Identity.from_broker(self.broker.call("login", user=username, password=password, client=client))

    def logout(self, identity: Identity) -> None:
        self.broker.call("logout", ticket=identity.ticket)
