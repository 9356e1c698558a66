"""``python -m local.token <username>``: print a Cognito ID token of a demo user, nothing else.

Reads the running stack's ``.local/stack.json`` (or ``--stack-file``) for the Cognito endpoint,
the app client and the user's password, and logs in with USER_PASSWORD_AUTH::

    TOKEN=$(python -m local.token actopan.physician)
    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/fhir/Patient

Exit status 2 for an unknown user or a missing stack file, 1 if Cognito refuses the login.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from local.auth import password_login
from local.aws import boto_session
from local.stack import configured_stack_file, read_stack_file


def main(argv: list[str] | None = None) -> int:
    """Print the ID token of the user named on the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m local.token", description="Print a demo user's ID token.")
    parser.add_argument("username", help="a demo username from the stack file, e.g. actopan.physician")
    parser.add_argument("--stack-file", type=Path, default=configured_stack_file())
    parser.add_argument("--password", help="the password, if the user is not in the stack file")
    parser.add_argument("--access", action="store_true", help="print the access token instead")
    options = parser.parse_args(argv)

    try:
        stack = read_stack_file(options.stack_file)
    except FileNotFoundError:
        sys.stderr.write(f"no stack file at {options.stack_file}: is `python -m local` running?\n")
        return 2
    password = options.password or next(
        (
            user["password"]
            for tenant in stack["tenants"]
            for user in tenant["users"]
            if user["username"] == options.username
        ),
        None,
    )
    if password is None:
        sys.stderr.write(f"{options.username} is not a demo user in {options.stack_file}; pass --password\n")
        return 2
    try:
        tokens = password_login(
            endpoint=stack["aws_endpoint"],
            region=stack["region"],
            client_id=stack["user_pool_client_id"],
            username=options.username,
            password=password,
            session=boto_session(stack["region"]),
        )
    except (ClientError, BotoCoreError, RuntimeError) as error:
        sys.stderr.write(f"login refused: {error}\n")
        return 1
    sys.stdout.write((tokens.access_token if options.access else tokens.id_token) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
