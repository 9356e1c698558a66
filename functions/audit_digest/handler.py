"""The hourly audit digests (decision 0022), in a function of their own (decision 0029).

An EventBridge schedule invokes it every hour: for every registered tenant it signs a digest of the
audit hash chains written since the tenant's last digest with the stack's digest KMS key and stores
it in the Object Lock bucket (``functions/admin/audit_integrity.py``, shipped in this asset). It is
the only function that may sign with that key; it serves no route, so no API request can reach the
signing code. ``$verify`` (the admin function) only reads the digests and the key's public half.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="expediente")


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    """Write the due digests of every tenant; raises ``ValueError`` for anything but a scheduled event."""
    if not (event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"):
        raise ValueError("the audit digest function runs on its schedule only")
    from functions.admin import audit_integrity

    written = audit_integrity.digest_all(log=lambda message, extra: logger.error(message, extra=extra))
    logger.info("audit digests written", extra={"digests": len(written)})
    return {"digests": len(written)}
