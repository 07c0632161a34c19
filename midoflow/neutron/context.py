"""Who is asking: the identity keystonemiddleware's auth_token put in the headers."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Context:
    """A request's caller. ``is_admin`` follows Neutron's default policy: the
    ``admin`` role (not ``X-Is-Admin-Project``, which Keystone sets to True for
    every project unless ``[resource] admin_project_name`` is configured)."""

    project_id: str
    user_id: str = ""
    roles: tuple[str, ...] = field(default_factory=tuple)
    project_name: str = ""
    user_name: str = ""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def binds_ports(self) -> bool:
        """May set and see port bindings: admin, or the ``service`` role Nova's
        service user has (Neutron's ``rule:admin_only or rule:service_api``)."""
        return self.is_admin or "service" in self.roles

    @classmethod
    def admin(cls, project_id: str = "admin") -> Context:
        """The no-auth development mode's caller, and tests'."""
        return cls(project_id=project_id, user_id="admin", roles=("admin",))

    @classmethod
    def from_noauth_environ(cls, environ: dict) -> Context:
        """The no-auth development mode's caller: admin, unless the request
        names a project (``X-Project-Id``) or roles (``X-Roles``, default
        member) to act as."""
        pid, roles = environ.get("HTTP_X_PROJECT_ID"), environ.get("HTTP_X_ROLES")
        if pid is None and roles is None:
            return cls.admin()
        return cls(project_id=(pid or "admin").strip(), user_id="noauth",
                   roles=tuple(r.strip() for r in (roles or "member").split(",")
                               if r.strip()))

    @classmethod
    def from_environ(cls, environ: dict) -> Context | None:
        """From auth_token's headers; None when the identity is not confirmed."""
        if environ.get("HTTP_X_IDENTITY_STATUS") != "Confirmed":
            return None
        roles = tuple(r.strip() for r in (environ.get("HTTP_X_ROLES") or "").split(",")
                      if r.strip())
        return cls(project_id=environ.get("HTTP_X_PROJECT_ID") or "",
                   user_id=environ.get("HTTP_X_USER_ID") or "", roles=roles,
                   project_name=environ.get("HTTP_X_PROJECT_NAME") or "",
                   user_name=environ.get("HTTP_X_USER_NAME") or "")
