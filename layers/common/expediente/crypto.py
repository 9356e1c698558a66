"""Application-level encryption: envelope encryption and keyed blind indexes.

Envelope encryption: a KMS data key (encryption context ``{tenant, purpose}``)
encrypts many values with AES-256-GCM; the KMS-encrypted data key travels with
each ciphertext. Keys are cached: a data key is reused for a bounded time and
number of messages, and decrypted data keys are remembered, so once warm a read
or a write makes no KMS call. Each value's AES-GCM associated data binds it to
its tenant and resource, so a ciphertext moved to another record fails to open.

Blind indexes: a per-tenant HMAC-SHA256 key, kept KMS-wrapped in the tenant
record, turns an identifier (CURP) into an opaque lookup token. No raw CURP ever
appears in a key, an index or a log, and equal CURPs in two tenants give
different tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from expediente.errors import ServiceUnavailable

_PREFIX = "enc1"


class DecryptionFailed(Exception):
    """A ciphertext is damaged or does not belong to the record it was read from."""


@dataclass
class _DataKey:
    plaintext: bytes
    wrapped: bytes
    created: float
    uses: int = 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Envelope:
    """Envelope encryption under one KMS key, with data-key caching.

    ``kms`` is a boto3 KMS client; ``clock`` returns seconds (monotonic).
    Thread-safe. Raises :class:`ServiceUnavailable` if KMS cannot be reached
    and :class:`DecryptionFailed` if a ciphertext fails authentication.
    """

    def __init__(
        self,
        kms: Any,
        key_id: str,
        *,
        max_age_s: float = 300,
        max_messages: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = 512,
    ) -> None:
        self._kms = kms
        self._key_id = key_id
        self._max_age = max_age_s
        self._max_messages = max_messages
        self._clock = clock
        self._encrypting: dict[str, _DataKey] = {}
        self._decrypting: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def encrypt(self, tenant: str, plaintext: bytes, aad: str) -> str:
        """Encrypt ``plaintext`` for ``tenant``; ``aad`` names the record it belongs to."""
        key = self._data_key(tenant)
        nonce = os.urandom(12)
        sealed = AESGCM(key.plaintext).encrypt(nonce, plaintext, f"{tenant}|{aad}".encode())
        return ".".join((_PREFIX, _b64(key.wrapped), _b64(nonce), _b64(sealed)))

    def decrypt(self, tenant: str, token: str, aad: str) -> bytes:
        """Open a value sealed by :meth:`encrypt` for the same tenant and ``aad``."""
        try:
            prefix, wrapped_b64, nonce_b64, sealed_b64 = token.split(".")
        except ValueError as exc:
            raise DecryptionFailed("not an Expediente ciphertext") from exc
        if prefix != _PREFIX:
            raise DecryptionFailed(f"unknown ciphertext version {prefix}")
        key = self._unwrap(tenant, _unb64(wrapped_b64))
        try:
            return AESGCM(key).decrypt(_unb64(nonce_b64), _unb64(sealed_b64), f"{tenant}|{aad}".encode())
        except InvalidTag as exc:
            raise DecryptionFailed("ciphertext does not match its record") from exc

    def _data_key(self, tenant: str) -> _DataKey:
        with self._lock:
            key = self._encrypting.get(tenant)
            now = self._clock()
            if key is None or now - key.created > self._max_age or key.uses >= self._max_messages:
                try:
                    response = self._kms.generate_data_key(
                        KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=_context(tenant, "envelope")
                    )
                except (BotoCoreError, ClientError) as exc:
                    raise ServiceUnavailable("Encryption service unavailable; nothing was stored") from exc
                key = _DataKey(response["Plaintext"], response["CiphertextBlob"], now)
                self._encrypting[tenant] = key
                self._remember(tenant, key.wrapped, key.plaintext)
            key.uses += 1
            return key

    def _unwrap(self, tenant: str, wrapped: bytes) -> bytes:
        with self._lock:
            cached = self._decrypting.get((tenant, wrapped))
            if cached is not None:
                self._decrypting.move_to_end((tenant, wrapped))
                return cached
        try:
            response = self._kms.decrypt(
                CiphertextBlob=wrapped, EncryptionContext=_context(tenant, "envelope"), KeyId=self._key_id
            )
        except (BotoCoreError, ClientError) as exc:
            if _is_client_error(exc, "InvalidCiphertextException"):
                raise DecryptionFailed("data key does not belong to this tenant") from exc
            raise ServiceUnavailable("Encryption service unavailable") from exc
        plaintext: bytes = response["Plaintext"]
        with self._lock:
            self._remember(tenant, wrapped, plaintext)
        return plaintext

    def _remember(self, tenant: str, wrapped: bytes, plaintext: bytes) -> None:
        self._decrypting[(tenant, wrapped)] = plaintext
        while len(self._decrypting) > self._cache_size:
            self._decrypting.popitem(last=False)


class BlindIndex:
    """Keyed HMAC lookup tokens, one key per tenant.

    ``load_wrapped_key(tenant)`` returns the tenant's KMS-wrapped index key
    (stored with the tenant); it is unwrapped once per process.
    """

    def __init__(self, kms: Any, key_id: str, load_wrapped_key: Callable[[str], bytes]) -> None:
        self._kms = kms
        self._key_id = key_id
        self._load = load_wrapped_key
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def token(self, tenant: str, kind: str, value: str) -> str:
        """The lookup token of ``value`` (already normalized) of ``kind`` (e.g. ``curp``)."""
        key = self._key(tenant)
        return hmac.new(key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()

    def _key(self, tenant: str) -> bytes:
        with self._lock:
            key = self._keys.get(tenant)
        if key is None:
            wrapped = self._load(tenant)
            try:
                response = self._kms.decrypt(
                    CiphertextBlob=wrapped, EncryptionContext=_context(tenant, "blind-index"), KeyId=self._key_id
                )
            except (BotoCoreError, ClientError) as exc:
                raise ServiceUnavailable("Encryption service unavailable") from exc
            key = bytes(response["Plaintext"])
            with self._lock:
                self._keys[tenant] = key
        return key


def new_wrapped_index_key(kms: Any, key_id: str, tenant: str) -> bytes:
    """Create a tenant's blind-index key; returns it KMS-wrapped, to store with the tenant."""
    response = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=_context(tenant, "blind-index"))
    return bytes(response["CiphertextBlob"])


def _context(tenant: str, purpose: str) -> dict[str, str]:
    return {"tenant": tenant, "purpose": purpose}


def _is_client_error(exc: Exception, code: str) -> bool:
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") == code
