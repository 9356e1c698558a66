"""``python -m ops``: operator commands.

Example (local stack)::

    python -m ops create-tenant --name "Clínicas Demo" --admin-username ana.admin \\
        --admin-email ana@example.com --admin-password 'Una-Clave-Larga-2026!'

Example (deployed stack)::

    python -m ops create-tenant --name "Clínicas Demo" --admin-username ana.admin \\
        --admin-email ana@example.com --stack-name Expediente-Stateful --region us-east-1

Prints the new tenant id, chain Organization id and admin username; never a password.
Exit status: 0 created, 2 bad arguments or stack description, 1 refused by AWS or the rules.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, ClientError

from expediente.errors import DomainError
from ops.tenants import DEFAULT_STACK_JSON, StackInfo, StackInfoError, create_tenant


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops", description="Expediente operator commands")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-tenant", help="create a clinic chain (tenant) and its first admin")
    create.add_argument("--name", required=True, help="the chain's name, e.g. 'Clínicas Demo'")
    create.add_argument("--admin-username", required=True)
    create.add_argument("--admin-email", required=True, help="Cognito sends the temporary password here")
    create.add_argument("--admin-password",
                        help="set this permanent password instead of emailing a temporary one (local/demo only)")
    where = create.add_mutually_exclusive_group()
    where.add_argument("--stack-json", help=f"the local stack's description (default {DEFAULT_STACK_JSON})")
    where.add_argument("--stack-name", help="a deployed stateful stack, e.g. Expediente-Stateful")
    create.add_argument("--region", help="the deployed stack's region (with --stack-name)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.stack_name:
            stack = StackInfo.from_cloudformation(args.stack_name, args.region)
        else:
            stack = StackInfo.from_stack_json(args.stack_json or DEFAULT_STACK_JSON)
    except StackInfoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        created = create_tenant(stack=stack, name=args.name, admin_username=args.admin_username,
                                admin_email=args.admin_email, admin_password=args.admin_password)
    except DomainError as exc:
        where = f" ({exc.expression})" if exc.expression else ""
        print(f"error: {exc.message}{where}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"error: AWS refused: {exc}", file=sys.stderr)
        return 1
    print(f"tenant_id={created.tenant_id}")
    print(f"organization_id={created.organization_id}")
    print(f"admin_username={created.admin_username}")
    if args.admin_password:
        print("admin password: the one given (permanent)")
    else:
        print("admin password: Cognito has emailed a temporary password")
    return 0


if __name__ == "__main__":
    sys.exit(main())
