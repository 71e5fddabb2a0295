"""A real directory server for the LDAP tests: Debian's slapd, started on loopback with its own
database, configuration and TLS certificate (a CA made for the run), and seeded with people
and groups. Nothing of the system's slapd is used or touched."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import ldap
import ldap.modlist

from bench.setup import free_port, wait_for_port

SUFFIX = "dc=portal,dc=test"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"

SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
TLSCACertificateFile {dir}/ca.pem
TLSCertificateFile {dir}/server.pem
TLSCertificateKeyFile {dir}/server.key
database mdb
maxsize 16777216
suffix "{suffix}"
rootdn "cn=admin,{suffix}"
rootpw {password}
directory {dir}/db
access to attrs=userPassword by anonymous auth by * none
access to * by * read
"""


def _certificates(folder: Path) -> None:
    """A CA made for this run, and a certificate it signs for 127.0.0.1 (openssl)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=portal test CA",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.pem")  # fmt: skip


@dataclass
class Directory:
    """slapd in `folder`, answering LDAPS (and plain LDAP, for StartTLS) on loopback."""

    folder: Path
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"ldaps://127.0.0.1:{self.port}"

    @property
    def admin_dn(self) -> str:
        return f"cn=admin,{SUFFIX}"

    @property
    def ca_file(self) -> str:
        return str(self.folder / "ca.pem")

    def portal_env(self, **extra: str) -> dict[str, str]:
        """What a portal needs in its environment to log in through this directory."""
        return {
            "LDAP_SERVER_URI": self.uri,
            "LDAP_CA_FILE": self.ca_file,
            "LDAP_BIND_DN": self.admin_dn,
            "LDAP_BIND_PASSWORD": self.password,
            "LDAP_USER_SEARCH_BASE": PEOPLE,
            "LDAP_GROUP_SEARCH_BASE": GROUPS,
            "LDAP_REQUIRE_GROUP": f"cn=portal-users,{GROUPS}",
            "LDAP_STAFF_GROUP": f"cn=portal-admins,{GROUPS}",
            **extra,
        }

    def create(self) -> None:
        (self.folder / "db").mkdir(parents=True)
        _certificates(self.folder)
        conf = SLAPD_CONF.format(dir=self.folder, suffix=SUFFIX, password=self.password)
        (self.folder / "slapd.conf").write_text(conf)
        self.port = free_port()
        self.start()
        self.add(SUFFIX, objectClass=["dcObject", "organization"], dc="portal", o="Portal test")
        self.add(PEOPLE, objectClass="organizationalUnit", ou="people")
        self.add(GROUPS, objectClass="organizationalUnit", ou="groups")

    def start(self) -> None:
        """Start slapd (again, on the same port and database)."""
        self.process = subprocess.Popen(
            [SLAPD, "-d", "0", "-f", str(self.folder / "slapd.conf"), "-h", f"{self.uri}/"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "slapd.log", "a"),
        )
        wait_for_port(self.port, self.process, "slapd")
        deadline = time.monotonic() + 10
        while True:  # the port opens before TLS is ready on a slow start
            try:
                self.connection()
                return
            except ldap.SERVER_DOWN:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def connection(self) -> ldap.ldapobject.LDAPObject:
        conn = ldap.initialize(self.uri)
        conn.set_option(ldap.OPT_X_TLS_CACERTFILE, self.ca_file)
        conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
        conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
        conn.simple_bind_s(self.admin_dn, self.password)
        return conn

    def add(self, dn: str, **attrs: str | list[str]) -> None:
        entry = {
            k: [v.encode() for v in ([value] if isinstance(value, str) else value)]
            for k, value in attrs.items()
        }
        self.connection().add_s(dn, ldap.modlist.addModlist(entry))

    def person(self, uid: str, password: str, *, name: str = "Test User") -> str:
        dn = f"uid={uid},{PEOPLE}"
        first, _, last = name.partition(" ")
        self.add(dn, objectClass="inetOrgPerson", uid=uid, cn=name, givenName=first, sn=last or first,
                 mail=f"{uid}@portal.test", userPassword=password)  # fmt: skip
        return dn

    def group(self, name: str, *members: str) -> str:
        dn = f"cn={name},{GROUPS}"
        # groupOfNames needs a member: the admin entry stands in for an empty group.
        self.add(dn, objectClass="groupOfNames", cn=name, member=list(members) or [self.admin_dn])
        return dn

    def join(self, group: str, member: str) -> None:
        self.connection().modify_s(f"cn={group},{GROUPS}", [(ldap.MOD_ADD, "member", [member.encode()])])

    def leave(self, group: str, member: str) -> None:
        self.connection().modify_s(f"cn={group},{GROUPS}", [(ldap.MOD_DELETE, "member", [member.encode()])])

    def remove(self, dn: str) -> None:
        self.connection().delete_s(dn)
