"""The stores' credentials: one secret file per deployment.

ZooKeeper nodes carry a digest ACL and Cassandra requires a password, so a
local user who cannot read this file cannot rewrite the topology or the flow
state behind the API's back. The file is INI, either section optional::

    # /etc/midoflow/store-credentials  (mode 0600, owner: the midoflow user or root)
    [zookeeper]
    user = midoflow
    password = <secret>
    [cassandra]
    user = midoflow
    password = <secret>

The agents name it in their config (``credentials_file = PATH``), the API
server in ``--store-credentials PATH`` (or ``MIDOFLOW_STORE_CREDENTIALS``).
A file that its group or others may read, or that another user owns, is
refused: the secret is only as private as the file. Passwords never appear in
``repr`` or in log lines.
"""

from __future__ import annotations

import configparser
import os
import secrets
import stat
from dataclasses import dataclass, field

SECTIONS = ("zookeeper", "cassandra")
ENV = "MIDOFLOW_STORE_CREDENTIALS"


class CredentialsError(ValueError):
    """The credentials file is missing, unsafe or malformed; the message says
    what to do."""


@dataclass(frozen=True)
class Login:
    """A user name and its password (the password is kept out of ``repr``)."""

    user: str
    password: str = field(repr=False)

    def __iter__(self):  # ``user, password = login``
        return iter((self.user, self.password))


@dataclass(frozen=True)
class StoreCredentials:
    """What a credentials file holds: a ZooKeeper digest login and a Cassandra
    role login, each None when the file has no section for it."""

    zookeeper: Login | None = None
    cassandra: Login | None = None
    path: str = ""


def generate_password() -> str:
    """A random password (32 URL-safe characters: no ':' nor quote)."""
    return secrets.token_urlsafe(24)


def _check_login(path: str, section: str, user: str, password: str) -> Login:
    if not user or ":" in user or "'" in user or not user.isprintable():
        raise CredentialsError(f"{path}: [{section}] user {user!r}: give a name without ':' "
                               "or quotes")
    if not password:
        raise CredentialsError(f"{path}: [{section}] password is empty: give one (e.g. from "
                               "`openssl rand -base64 24`)")
    if "'" in password or "\n" in password:
        raise CredentialsError(f"{path}: [{section}] password must not contain quotes or "
                               "newlines")
    return Login(user, password)


def check_file_private(path: str) -> None:
    """Refuse a file others could read or that another user owns."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise CredentialsError(f"cannot read the store credentials file {path}: "
                               f"{e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CredentialsError(f"store credentials {path} is not a regular file")
    if st.st_mode & 0o077:
        raise CredentialsError(
            f"store credentials file {path} is readable or writable by its group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): run `chmod 600 {path}`")
    if st.st_uid not in (0, os.geteuid()):
        raise CredentialsError(
            f"store credentials file {path} belongs to uid {st.st_uid}, not to this user "
            f"(uid {os.geteuid()}) nor root: `chown` it to the user midoflow runs as")


def load_credentials(path: str | os.PathLike) -> StoreCredentials:
    """Read a credentials file (see the module doc); CredentialsError says
    what is wrong with it."""
    path = os.fspath(path)
    check_file_private(path)
    cp = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as f:
            cp.read_file(f)
    except (OSError, configparser.Error) as e:
        raise CredentialsError(f"store credentials file {path}: {e}") from None
    unknown = set(cp.sections()) - set(SECTIONS)
    if unknown:
        raise CredentialsError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}: "
                               f"use {' and '.join(f'[{s}]' for s in SECTIONS)}")
    logins: dict[str, Login] = {}
    for section in SECTIONS:
        if section not in cp:
            continue
        sec = cp[section]
        extra = set(sec) - {"user", "password"}
        if extra:
            raise CredentialsError(f"{path}: [{section}] unknown option(s) "
                                   f"{', '.join(sorted(extra))}: give user and password")
        logins[section] = _check_login(path, section, sec.get("user", "").strip(),
                                       sec.get("password", "").strip())
    if not logins:
        raise CredentialsError(f"{path}: no [zookeeper] nor [cassandra] section")
    return StoreCredentials(path=path, **logins)


def credentials_from_env() -> StoreCredentials | None:
    """The file named by ``$MIDOFLOW_STORE_CREDENTIALS``, None if unset."""
    path = os.environ.get(ENV)
    return load_credentials(path) if path else None


def write_credentials(path: str | os.PathLike, *, zookeeper: Login | tuple | None = None,
                      cassandra: Login | tuple | None = None) -> StoreCredentials:
    """Write a credentials file with mode 0600 (replacing one), and return it."""
    path = os.fspath(path)
    lines = ["# midoflow store credentials: keep this file mode 0600\n"]
    for section, login in (("zookeeper", zookeeper), ("cassandra", cassandra)):
        if login is not None:
            user, password = login
            _check_login(path, section, user, password)
            lines += [f"[{section}]\n", f"user = {user}\n", f"password = {password}\n"]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.writelines(lines)
    return load_credentials(path)
