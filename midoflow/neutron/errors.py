"""Neutron's errors: each is answered as ``{"NeutronError": {"type", "message",
"detail"}}`` with its HTTP status; ``type`` is the class name, as in Neutron."""

from __future__ import annotations


class NeutronError(Exception):
    status = 500

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict:
        return {"NeutronError": {"type": self.type, "message": self.message,
                                 "detail": self.detail}}


class BadRequest(NeutronError):
    """Invalid input (Neutron's ``HTTPBadRequest``)."""

    status = 400

    @property
    def type(self) -> str:
        return "HTTPBadRequest"


class InvalidInput(BadRequest):
    @property
    def type(self) -> str:
        return "InvalidInput"


class NotAuthorized(NeutronError):
    """401: no or a bad token (normally answered by keystonemiddleware)."""

    status = 401


class PolicyNotAuthorized(NeutronError):
    status = 403


class NotFound(NeutronError):
    status = 404


class NetworkNotFound(NotFound): ...
class SubnetNotFound(NotFound): ...
class PortNotFound(NotFound): ...
class RouterNotFound(NotFound): ...
class FloatingIPNotFound(NotFound): ...
class SecurityGroupNotFound(NotFound): ...
class SecurityGroupRuleNotFound(NotFound): ...
class RouterInterfaceNotFound(NotFound): ...
class RouterInterfaceNotFoundForSubnet(NotFound): ...
class ExternalGatewayForFloatingIPNotFound(NotFound): ...
class ResourceNotFound(NotFound): ...


class Conflict(NeutronError):
    status = 409


class NetworkInUse(Conflict): ...
class SubnetInUse(Conflict): ...
class PortInUse(Conflict): ...
class RouterInUse(Conflict): ...
class IpAddressInUse(Conflict): ...
class IpAddressGenerationFailure(Conflict): ...
class MacAddressInUse(Conflict): ...
class FloatingIPPortAlreadyAssociated(Conflict): ...
class SecurityGroupInUse(Conflict): ...
class SecurityGroupRuleExists(Conflict): ...
class RouterInterfaceInUseByFloatingIP(Conflict): ...
class OverQuota(Conflict): ...


class ServiceUnavailable(NeutronError):
    """The topology store lost quorum or cannot be reached: nothing was written."""

    status = 503
