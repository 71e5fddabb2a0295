"""Settings for the VM console portal.

Every value a deployment may change is read from the environment here, and only here,
with a default that is safe for a local run (see the README's table).
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


def env_str(name: str, default: str) -> str:
    """The variable's value, or the default when unset or empty."""
    return os.environ.get(name) or default


def env_bool(name: str, default: bool) -> bool:
    """A yes/no variable; anything unexpected is refused rather than guessed."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r}: use one of 1/0, true/false, yes/no, on/off")


def env_int(name: str, default: int) -> int:
    """A whole-number variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected a whole number") from None


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated variable."""
    raw = os.environ.get(name, "")
    items = [item.strip() for item in raw.split(",") if item.strip()]
    return items or default


def default_secret_key() -> str:
    """A random key kept in var/, so a local run needs no configuration and sessions survive
    restarts. Written to a temporary file and linked into place, so two processes starting
    together agree on one key and neither reads a half-written file."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        from django.core.management.utils import get_random_secret_key

        VAR_DIR.mkdir(mode=0o700, exist_ok=True)
        temporary = VAR_DIR / f".secret_key.{os.getpid()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(get_random_secret_key())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process won; use its key
        finally:
            temporary.unlink()
    return path.read_text().strip()


def private_sqlite_file(path: str) -> None:
    """Create the SQLite file readable by its owner only (SQLite gives its -wal and -shm files
    the same mode), and tighten an existing one: it holds sessions and password hashes."""
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.chmod(path + suffix, 0o600)


def default_libvirt_uri() -> str:
    """The local hypervisor: the system daemon for root, the per-user session daemon otherwise."""
    return "qemu:///system" if os.geteuid() == 0 else "qemu:///session"


SECRET_KEY = os.environ.get("SECRET_KEY") or default_secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
LIBVIRT_URI = env_str("LIBVIRT_URI", default_libvirt_uri())
DEMO_PASSWORD = os.environ.get("DEMO_PASSWORD", "")


def default_guest_dir() -> str:
    """Where bin/setup puts the demo guest's kernel and initramfs: for the system daemon, its
    own boot directory, which QEMU (user libvirt-qemu) can reach wherever the checkout is."""
    if LIBVIRT_URI == "qemu:///system":
        return "/var/lib/libvirt/boot/console-portal"
    return str(VAR_DIR / "guest")


# A scraper sending `Authorization: Bearer <this>` may read /metrics (staff may anyway).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# Set by bin/cluster for several workers: where each process writes its metrics, which
# prometheus_client itself reads from the environment at import.
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")

# The demo guest (bin/build-guest); the same path on every host (bin/hv2 copies it there).
GUEST_DIR = env_str("GUEST_DIR", default_guest_dir())
# Where each host's virtlogd keeps the VMs' serial logs (`<NAME>-serial0.log`): libvirt's own
# log directory, the same path on every host.
SERIAL_LOG_DIR = env_str(
    "SERIAL_LOG_DIR",
    "/var/log/libvirt/qemu"
    if LIBVIRT_URI == "qemu:///system"
    else str(Path.home() / ".cache/libvirt/qemu/log"),
)

# How long a console ticket admits new connections, and how many it admits (spice-html5 opens
# one WebSocket per SPICE channel, so one ticket must admit several: main, display, inputs,
# cursor, playback, record, ports, and a reconnect or two).
CONSOLE_TICKET_SECONDS = env_int("CONSOLE_TICKET_SECONDS", 60)
CONSOLE_TICKET_MAX_CONNECTIONS = env_int("CONSOLE_TICKET_MAX_CONNECTIONS", 16)
# Tickets cost libvirt calls: at most this many per user and VM, and per user, in any minute
# (0: no limit); more get HTTP 429 with a time to retry.
CONSOLE_TICKETS_PER_MINUTE_PER_VM = env_int("CONSOLE_TICKETS_PER_MINUTE_PER_VM", 12)
CONSOLE_TICKETS_PER_MINUTE = env_int("CONSOLE_TICKETS_PER_MINUTE", 60)
# Screenshots, key combinations and texts typed through the API (console.automation), per user.
AUTOMATION_ACTIONS_PER_MINUTE = env_int("AUTOMATION_ACTIONS_PER_MINUTE", 120)
# Consoles one user may hold at once, idle and length limits: global settings in the registry
# (console.maxSessionsPerUser, console.idleTimeoutMinutes, console.maxSessionMinutes).
# How often an open console checks that its user still has the right to it (and records a
# heartbeat): logging out, a new password, a deactivated account or a VM given to someone else
# ends the console within about this many seconds.
CONSOLE_RECHECK_SECONDS = env_int("CONSOLE_RECHECK_SECONDS", 2)
# How long a VM's graphics password (which only the portal's proxies know) stays valid; a
# ticket rotates it when less than its own life remains (console/graphics.py).
CONSOLE_PASSWORD_SECONDS = env_int("CONSOLE_PASSWORD_SECONDS", 600)
# A live migration not done by then is aborted (the VM stays where it was).
MIGRATION_TIMEOUT_SECONDS = env_int("MIGRATION_TIMEOUT_SECONDS", 300)
# Connections one standalone proxy process (spiceproxy, consoleproxy) relays at once, and how
# many of them one client address may hold (with those still sending their request).
PROXY_MAX_CONNECTIONS = env_int("PROXY_MAX_CONNECTIONS", 1000)
PROXY_MAX_CONNECTIONS_PER_SOURCE = env_int("PROXY_MAX_CONNECTIONS_PER_SOURCE", 64)
# The portal's SSH key for remote hosts (qemu+ssh://), and where it keeps their host keys.
SSH_KEY_FILE = env_str("SSH_KEY_FILE", str(VAR_DIR / "ssh" / "id_ed25519"))
SSH_KNOWN_HOSTS_DIR = env_str("SSH_KNOWN_HOSTS_DIR", str(VAR_DIR / "ssh" / "known_hosts.d"))
# The graphics password of a .vv download stays valid this long.
VV_PASSWORD_SECONDS = env_int("VV_PASSWORD_SECONDS", 120)
# Where console recordings are written (console.recording); several machines share it over
# a network file system (README, Recording).
RECORDINGS_DIR = env_str("RECORDINGS_DIR", str(VAR_DIR / "recordings"))
# When set, console pages connect through this websockify proxy instead of /ws/console/.
CONSOLE_PROXY_URL = env_str("CONSOLE_PROXY_URL", "")
# When set, .vv files send remote-viewer through this HTTP CONNECT proxy (manage.py spiceproxy).
SPICE_PROXY_URL = env_str("SPICE_PROXY_URL", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_otp",  # two-factor authentication (console.twofactor)
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "ninja",  # the API's docs page and its static files
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "console.middleware.PortalErrorMiddleware",
    "console.accounts.AccountRecheckMiddleware",
    "console.twofactor.TwoFactorMiddleware",
]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# No persistent connections: under ASGI each request runs in a thread of its own, and a
# connection kept per thread outlives the thread (Django's advice for ASGI: CONN_MAX_AGE = 0).
# PostgreSQL gets psycopg's pool instead, so requests do not pay for a new connection.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"), conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("DB_POOL_SIZE", 10),
        # How long a request waits for a connection: when the database does not answer, pages
        # say so within this (503) instead of hanging for psycopg's default 30 s.
        "timeout": env_int("DB_POOL_TIMEOUT", 3),
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    private_sqlite_file(str(DATABASES["default"]["NAME"]))
    # Several threads (Daphne's sync workers) and processes (standalone proxies) write here:
    # WAL lets readers go on while one writes, IMMEDIATE takes the write lock up front instead
    # of failing on upgrade, and a generous timeout waits for it.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# In-memory by default; REDIS_URL shares the layer between several Daphne processes.
REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Set by bin/cluster: how many workers serve this portal. Several workers must share the
# database (tickets, sessions) and the channel layer: SQLite and the in-memory layer are one
# process's only.
PORTAL_WORKERS = env_int("PORTAL_WORKERS", 1)
if PORTAL_WORKERS > 1:
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        raise ImproperlyConfigured(
            f"PORTAL_WORKERS={PORTAL_WORKERS}: several workers need a shared database; set "
            "DATABASE_URL=postgres://USER@HOST/DB (SQLite is one machine's file, and one writer's)."
        )
    if not REDIS_URL:
        raise ImproperlyConfigured(
            f"PORTAL_WORKERS={PORTAL_WORKERS}: several workers need a shared channel layer; set "
            "REDIS_URL=redis://HOST:6379/0 (the in-memory layer is one process's)."
        )

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console:vm-list"
LOGOUT_REDIRECT_URL = "login"
OTP_TOTP_ISSUER = "VM consoles"  # what authenticator apps call the portal's codes

# --- LDAP login (console.directory): on when LDAP_SERVER_URI is set. Directory accounts log in
# with their directory password; local accounts (the demo admin, break-glass administrators)
# keep logging in with theirs, and a local account is never taken over by a directory entry of
# the same name. The directory is read again every LDAP_RECHECK_SECONDS while a directory user
# has pages or consoles open: removed from the directory or from LDAP_REQUIRE_GROUP, they are
# logged out and their consoles end.
LDAP_SERVER_URI = env_str("LDAP_SERVER_URI", "")
LDAP_RECHECK_SECONDS = env_int("LDAP_RECHECK_SECONDS", 10)
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
if LDAP_SERVER_URI:
    import ldap
    from django_auth_ldap.config import GroupOfNamesType, LDAPSearch, PosixGroupType

    def _required(name: str) -> str:
        value = os.environ.get(name, "").strip()
        if not value:
            raise ImproperlyConfigured(f"LDAP_SERVER_URI is set, so {name} is needed too (see README, LDAP)")
        return value

    if not LDAP_SERVER_URI.startswith(("ldap://", "ldaps://")):
        raise ImproperlyConfigured(
            f"LDAP_SERVER_URI={LDAP_SERVER_URI!r}: expected ldaps://HOST or ldap://HOST"
        )
    AUTHENTICATION_BACKENDS = ["console.directory.DirectoryBackend", *AUTHENTICATION_BACKENDS]
    AUTH_LDAP_SERVER_URI = LDAP_SERVER_URI
    AUTH_LDAP_BIND_DN = env_str("LDAP_BIND_DN", "")
    AUTH_LDAP_BIND_PASSWORD = env_str("LDAP_BIND_PASSWORD", "")
    AUTH_LDAP_START_TLS = env_bool("LDAP_START_TLS", False)
    AUTH_LDAP_USER_SEARCH = LDAPSearch(
        _required("LDAP_USER_SEARCH_BASE"), ldap.SCOPE_SUBTREE, env_str("LDAP_USER_FILTER", "(uid=%(user)s)")
    )
    _posix = env_str("LDAP_GROUP_TYPE", "groupOfNames") == "posixGroup"
    AUTH_LDAP_GROUP_SEARCH = LDAPSearch(
        _required("LDAP_GROUP_SEARCH_BASE"),
        ldap.SCOPE_SUBTREE,
        "(objectClass=posixGroup)" if _posix else "(objectClass=groupOfNames)",
    )
    AUTH_LDAP_GROUP_TYPE = PosixGroupType() if _posix else GroupOfNamesType()
    AUTH_LDAP_MIRROR_GROUPS = True  # the portal's groups (and their VM grants) follow the directory's
    AUTH_LDAP_USER_ATTR_MAP = {"first_name": "givenName", "last_name": "sn", "email": "mail"}
    AUTH_LDAP_REQUIRE_GROUP = os.environ.get("LDAP_REQUIRE_GROUP") or None
    AUTH_LDAP_USER_FLAGS_BY_GROUP = {
        **({"is_active": AUTH_LDAP_REQUIRE_GROUP} if AUTH_LDAP_REQUIRE_GROUP else {}),
        **({"is_staff": os.environ["LDAP_STAFF_GROUP"]} if os.environ.get("LDAP_STAFF_GROUP") else {}),
    }
    # A directory that does not answer costs a login a few seconds, not a hung worker.
    # Certificates are always verified; LDAP_CA_FILE names the CA that signed the server's
    # (else the system's). Set per connection, so NEWCTX comes last.
    AUTH_LDAP_CONNECTION_OPTIONS = {
        ldap.OPT_NETWORK_TIMEOUT: 3,
        ldap.OPT_TIMEOUT: 5,
        ldap.OPT_X_TLS_REQUIRE_CERT: ldap.OPT_X_TLS_DEMAND,
        **({ldap.OPT_X_TLS_CACERTFILE: os.environ["LDAP_CA_FILE"]} if os.environ.get("LDAP_CA_FILE") else {}),
        ldap.OPT_X_TLS_NEWCTX: 0,
    }

# --- Single sign-on (console.sso): on when OIDC_ISSUER is set. The login page offers "Log in
# with OIDC_PROVIDER_NAME" beside the local form; the provider's groups claim becomes the user's
# portal groups (so grants to groups follow it), OIDC_ALLOWED_GROUPS admits, OIDC_STAFF_GROUPS
# makes staff. The portal reads the user's claims again every OIDC_RECHECK_SECONDS while they
# have pages or consoles open, with their tokens (refreshed as needed).
OIDC_ISSUER = env_str("OIDC_ISSUER", "").rstrip("/")
OIDC_CLIENT_ID = env_str("OIDC_CLIENT_ID", "")
OIDC_CLIENT_SECRET = env_str("OIDC_CLIENT_SECRET", "")
OIDC_SCOPES = env_str("OIDC_SCOPES", "openid profile email")
OIDC_USERNAME_CLAIM = env_str("OIDC_USERNAME_CLAIM", "preferred_username")
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups")
OIDC_ALLOWED_GROUPS = env_list("OIDC_ALLOWED_GROUPS", [])
OIDC_STAFF_GROUPS = env_list("OIDC_STAFF_GROUPS", [])
OIDC_PROVIDER_NAME = env_str("OIDC_PROVIDER_NAME", "single sign-on")
OIDC_RECHECK_SECONDS = env_int("OIDC_RECHECK_SECONDS", 60)
if OIDC_ISSUER:
    if not OIDC_ISSUER.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ImproperlyConfigured(
            f"OIDC_ISSUER={OIDC_ISSUER!r}: expected https://HOST/... (http only on loopback)"
        )
    if not (OIDC_CLIENT_ID and OIDC_CLIENT_SECRET):
        raise ImproperlyConfigured(
            "OIDC_ISSUER is set, so OIDC_CLIENT_ID and OIDC_CLIENT_SECRET are needed too"
        )
    if "openid" not in OIDC_SCOPES.split():
        raise ImproperlyConfigured(f"OIDC_SCOPES={OIDC_SCOPES!r}: must include openid")

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # Plain HTTP that reaches the portal through the proxy is sent to HTTPS; the proxy's own
    # health checks (on the portal's loopback port) are not.
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    # HSTS for 30 days by default (HSTS_SECONDS; 0 turns it off). Not for subdomains or the
    # preload list: the portal cannot know that every other name under its domain has TLS.
    SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 30 * 24 * 3600)
    SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# The API's pages: at most this many rows per request (?limit=).
NINJA_PAGINATION_MAX_LIMIT = 500

# The pages, their messages and the console pages' JavaScript in English, German and French:
# the browser's Accept-Language chooses, the header's language switch overrides (a cookie).
# The catalogues (locale/) are compiled at set-up (bin/setup), not committed.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("de", "Deutsch"), ("fr", "Français")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# bin/setup collects the static files here, each under a name carrying its content's hash,
# which portal/static.py serves as immutable (a separate web server may serve it too).
STATIC_ROOT = env_str("STATIC_ROOT", str(VAR_DIR / "static"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "portal.static.HashedStaticFilesStorage"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "console": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO"), "propagate": False},
        # One line per SSH channel at INFO: a line per console connection to a remote host.
        "asyncssh": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
# Static files are served by portal/static.py, in front of Django, from STATIC_ROOT (where
# bin/setup collects them) or, before that, from the finders' folders.
