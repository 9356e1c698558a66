"""Cognito tokens as the API Gateway user-pool authorizer sees them, and logging in.

``IdTokenVerifier`` checks an ``Authorization`` header the way the REST API's Cognito authorizer
does (RS256 signature against the pool's JWKS, ``exp``, ``iss``, ``aud`` = app client,
``token_use`` = ``id``); ``api_gateway_claims`` renders the verified claims as the authorizer
hands them to Lambda in ``requestContext.authorizer.claims``; ``password_login`` gets tokens with
USER_PASSWORD_AUTH from the embedded Cognito.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import boto3
import jwt

# Cognito's keys do not rotate while the embedded AWS runs; an unknown kid still forces a refetch.
_JWKS_LIFESPAN_S = 24 * 3600
_JWKS_TIMEOUT_S = 5
# Java's Date.toString() names, which API Gateway uses for exp and iat.
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# API Gateway formats these two as dates; auth_time and other numbers stay epoch seconds
# (see the authorizer output quoted in amazon-cognito-identity-js issue #92).
_DATE_CLAIMS = ("exp", "iat")


class TokenRejected(Exception):
    """The request carries no token, or one the authorizer would refuse (answer 401).

    The message says why, for debug logs; it never contains the token.
    """


class JwksUnavailable(Exception):
    """The pool's signing keys could not be fetched: a fault of the stack, not of the client."""


class IdTokenVerifier:
    """Verifies Cognito ID tokens of one user pool and app client.

    ``jwks_url`` is fetched on first use and cached; a token whose ``kid`` is not in the cached
    set triggers one refetch before it is refused. Thread-safe for concurrent ``verify`` calls.
    """

    def __init__(self, *, jwks_url: str, issuer: str, audience: str) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self._jwks = jwt.PyJWKClient(jwks_url, lifespan=_JWKS_LIFESPAN_S, timeout=_JWKS_TIMEOUT_S)

    def verify(self, authorization: str | None) -> dict[str, Any]:
        """The claims of the ID token in an ``Authorization`` header value.

        Accepts ``Bearer <token>`` and the bare token (API Gateway accepts both). Raises
        TokenRejected for a missing, malformed, unsigned, wrongly signed, expired, foreign-pool,
        foreign-client or non-ID token, and JwksUnavailable if the keys cannot be fetched.
        """
        token = _token_from_header(authorization)
        try:
            signing_key = self._jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as error:
            raise JwksUnavailable(f"cannot fetch {self.jwks_url}: {error}") from error
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as error:
            raise TokenRejected(f"no usable signing key: {type(error).__name__}") from error
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key.key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "token_use"]},
            )
        except jwt.InvalidTokenError as error:
            raise TokenRejected(f"invalid token: {type(error).__name__}") from error
        if claims.get("token_use") != "id":
            raise TokenRejected("not an ID token")
        return claims


def _token_from_header(authorization: str | None) -> str:
    if authorization is None or not authorization.strip():
        raise TokenRejected("no Authorization header")
    value = authorization.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    if not value or " " in value:
        raise TokenRejected("malformed Authorization header")
    return value


def java_date(epoch_seconds: int | float) -> str:
    """``Fri Jul 29 18:52:53 UTC 2016``: how API Gateway renders ``exp`` and ``iat``."""
    moment = time.gmtime(int(epoch_seconds))
    return (
        f"{_WEEKDAYS[moment.tm_wday]} {_MONTHS[moment.tm_mon - 1]} {moment.tm_mday:02d} "
        f"{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d} UTC {moment.tm_year}"
    )


def api_gateway_claims(claims: dict[str, Any]) -> dict[str, str]:
    """Verified claims as ``requestContext.authorizer.claims``: every value a string.

    Lists (``cognito:groups``) are joined with ``,``, booleans are ``true``/``false``, ``exp`` and
    ``iat`` are Java-style dates, other numbers their decimal text, objects compact JSON.
    """
    rendered: dict[str, str] = {}
    for name, value in claims.items():
        if name in _DATE_CLAIMS and isinstance(value, int | float):
            rendered[name] = java_date(value)
        elif isinstance(value, bool):
            rendered[name] = "true" if value else "false"
        elif isinstance(value, list | tuple):
            rendered[name] = ",".join(str(item) for item in value)
        elif isinstance(value, dict):
            rendered[name] = json.dumps(value, separators=(",", ":"))
        else:
            rendered[name] = str(value)
    return rendered


@dataclass(frozen=True)
class Tokens:
    id_token: str
    access_token: str
    refresh_token: str
    expires_in: int


def password_login(
    *, endpoint: str, region: str, client_id: str, username: str, password: str, session: boto3.Session
) -> Tokens:
    """Log in with USER_PASSWORD_AUTH against the Cognito at ``endpoint``.

    Raises botocore's ClientError (``NotAuthorizedException`` for a wrong password) and
    RuntimeError if Cognito answers with a challenge (new password, MFA) instead of tokens.
    """
    cognito = session.client("cognito-idp", endpoint_url=endpoint, region_name=region)
    answer = cognito.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": password},
    )
    if "AuthenticationResult" not in answer:
        raise RuntimeError(f"Cognito answered the login with challenge {answer.get('ChallengeName')}")
    result = answer["AuthenticationResult"]
    return Tokens(result["IdToken"], result["AccessToken"], result.get("RefreshToken", ""), int(result["ExpiresIn"]))
