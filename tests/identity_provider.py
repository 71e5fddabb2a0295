"""A real OpenID Connect provider for the single sign-on tests: node-oidc-provider
(tests/oidc_provider.mjs) in a process of its own on loopback, with the portal registered as a
client. The tests change people's groups, disable them, stop the provider, or make its token
endpoint forge its answers."""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.setup import wait_for_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "oidc_provider.mjs"


@dataclass
class IdentityProvider:
    folder: Path
    port: int
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    process: subprocess.Popen | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def portal_env(self, **extra: str) -> dict[str, str]:
        """What a portal needs in its environment to sign in through this provider."""
        return {
            "OIDC_ISSUER": self.issuer,
            "OIDC_CLIENT_ID": "portal",
            "OIDC_CLIENT_SECRET": self.client_secret,
            "OIDC_SCOPES": "openid profile email groups",
            "OIDC_PROVIDER_NAME": "Test IdP",
            "OIDC_ALLOWED_GROUPS": "portal-users",
            "OIDC_STAFF_GROUPS": "portal-admins",
            **extra,
        }

    def start(self, portal_url: str) -> None:
        """Start the provider (again), with the portal at `portal_url` as its client."""
        config = {
            "port": self.port,
            "accounts": str(self.folder / "accounts.json"),
            "tamper": str(self.folder / "tamper.json"),
            "clients": [
                {
                    "client_id": "portal",
                    "client_secret": self.client_secret,
                    "redirect_uris": [f"{portal_url}/accounts/sso/callback/"],
                    "post_logout_redirect_uris": [f"{portal_url}/accounts/login/"],
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                }
            ],
        }
        (self.folder / "config.json").write_text(json.dumps(config))
        if not (self.folder / "accounts.json").exists():
            self.accounts({})
        self.process = subprocess.Popen(
            ["node", str(SCRIPT), str(self.folder / "config.json")],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "provider.log", "a"),
        )
        wait_for_port(self.port, self.process, "identity provider")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def accounts(self, accounts: dict[str, dict]) -> None:
        """Who the provider knows: {"id": {"name", "email", "groups", "disabled"}} (read at every request)."""
        (self.folder / "accounts.json").write_text(json.dumps(accounts))

    def tamper(self, mode: str | None) -> None:
        """Make the token endpoint forge its ID tokens (see tests/oidc_provider.mjs), or stop."""
        (self.folder / "tamper.json").write_text(json.dumps({"mode": mode}))

    def person(self, uid: str, *groups: str, disabled: bool = False) -> None:
        """Add or change one person (their groups, whether disabled)."""
        path = self.folder / "accounts.json"
        accounts = json.loads(path.read_text()) if path.exists() else {}
        accounts[uid] = {
            "name": f"Test {uid}",
            "email": f"{uid}@portal.test",
            "groups": list(groups),
            "disabled": disabled,
        }
        self.accounts(accounts)
