"""``X-Instance-ID-Signature``: the hex HMAC-SHA256 of the instance id keyed
with the shared secret (Nova's ``metadata_proxy_shared_secret``), exactly as
Neutron's metadata proxy signs it and Nova checks it."""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, instance_id: str) -> str:
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


def valid(secret: str, instance_id: str, signature: str) -> bool:
    """Whether ``signature`` is ``sign(secret, instance_id)`` (constant time)."""
    return hmac.compare_digest(sign(secret, instance_id), signature)
