"""No secret in the repository or in the synthesized templates (issue 7, item 7).

detect-secrets (Yelp) scans every git-tracked file and every CloudFormation template the CDK app
synthesizes, with its default plugins (AWS keys, private keys, JWTs, high-entropy strings, secret
keywords, ...). Anything it finds fails the test unless it is in :data:`ALLOWED`, an explicit
allow-list keyed by file and the SHA-1 of the value detect-secrets reports (never the value): a new
value in the same file, or the same value in another file, is a new finding. Each entry says why it
is not a secret, and an entry that no longer matches anything fails too, so the list cannot rot.

Decision on the demo passwords (docs/decisions/0024-patient-access-and-arco.md): the local stack's
seeded users share one committed password. They exist only in the embedded moto Cognito on
127.0.0.1 that ``python -m local`` starts; no deployed user pool is seeded by that code (tenants'
first administrators are created by ``ops/tenants.py`` with a password the operator passes), so
publishing it grants nothing, and committing it is what lets the documentation's examples run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SELF = "tests/unit/test_secrets.py"

_TESTING = "dc724af18fbdd4e59189f5fe768a5f8311527050"  # "testing": moto's documented fake AWS credentials
ALLOWED: dict[tuple[str, str], str] = {
    ("local/seed.py", "1ff62dd3efab9fa446ce09489b3dd5c71ab70720"):
        "the demo users' password of the embedded local stack (moto Cognito on 127.0.0.1 only); see module doc",
    ("tests/e2e/conftest.py", "cffb1c33ed90db9cd318a87e0f4d1db504e72ac9"):
        "password of users the e2e tests create in the local stack's moto Cognito",
    ("tests/integration/admin/conftest.py", "6aecdac1d4af8861dfe636714c456482e5475f57"):
        "password of users the integration tests create in moto's in-process Cognito",
    ("docs/guides/operations.md", "0c26ec8351498faa0dbb75b2be3235b48b9d44a8"):
        "a placeholder in the operations guide's example command, to be replaced by the operator",
    ("local/aws.py", "f4be23369af42bd16b7a246ef6e972632dbca308"):
        "the literal key name 'ClientSecret' in a Cognito app-client description, not a value",
    ("local/aws.py", _TESTING): "moto's fake AWS credentials for the embedded AWS on 127.0.0.1",
    ("ops/tenants.py", _TESTING): "moto's fake AWS credentials, used only against the local stack",
    ("benchmarks/imaging.py", _TESTING): "moto's fake AWS credentials of the local benchmark",
    ("tests/support/aws.py", _TESTING): "moto's fake AWS credentials of the test world",
    ("tests/unit/common/test_signing.py", _TESTING): "moto's fake AWS credentials of the test",
    ("functions/orders/logic.py", "dd2629a3063b9c7fdad7837bcbe48e2dd31e44d1"):
        "the alphabet of accession numbers (0-9, A-Z without I, O), not a key",
    ("functions/patients/logic.py", "5831a784a378504a94e06181f1a00c656b39701c"):
        "the base32 alphabet of patient ids, not a key",
    ("layers/common/expediente/clinical.py", "5831a784a378504a94e06181f1a00c656b39701c"):
        "the base32 alphabet of resource ids, not a key",
    ("tests/unit/dicom/test_header.py", "3deda56d9e365c6f7a1915e819a0d4ed1606869d"):
        "a synthetic DICOM patient name the test plants to prove it never reaches a log",
    ("docs/guides/api-reference.md", "6cb6dd5dda395fdacde33811efd8f7c6e6050008"):
        "password the API reference sets for a user it creates in the local stack's moto Cognito (127.0.0.1)",
    ("tests/integration/security/walker.py", "5831a784a378504a94e06181f1a00c656b39701c"):
        "the base32 alphabet of resource ids (made-up ids of the tenant walk), not a key",
    ("tests/unit/prescriptions/test_receta.py", "386c9b53c0a2b6fe53b148541529c7ac30830854"):
        "the SHA-256 digest of a test document (a public value by design)",
}


def scan_file(path: str) -> list[tuple[str, str, str, int]]:
    """detect-secrets findings of one file: (path, type, hashed secret, line)."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    found = SecretsCollection(root=str(ROOT))
    with default_settings():
        found.scan_file(path)
    return [(name, secret.type, secret.secret_hash, secret.line_number or 0)
            for name, secrets in found.data.items() for secret in secrets]


def scan(paths: list[str]) -> list[tuple[str, str, str, int]]:
    """Findings of many files, scanned in parallel (largest first: the catalogues take most of the time)."""
    ordered = sorted(paths, key=lambda p: -(ROOT / p).stat().st_size)
    with ProcessPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        return [finding for result in pool.map(scan_file, ordered, chunksize=4) for finding in result]


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    # This file is left out: it holds the allow-list's digests and the fakes the tests below plant.
    return [p for p in listed.decode().split("\0") if p and (ROOT / p).is_file() and p != SELF]


def unexpected(findings: list[tuple[str, str, str, int]]) -> list[str]:
    return [f"{path}:{line} {kind}" for path, kind, digest, line in findings if (path, digest) not in ALLOWED]


@pytest.fixture(scope="module")
def repository_findings() -> list[tuple[str, str, str, int]]:
    cwd = os.getcwd()
    os.chdir(ROOT)  # detect-secrets reports paths as given; keep them repository-relative
    try:
        return scan(tracked_files())
    finally:
        os.chdir(cwd)


def test_no_secret_is_committed_in_any_tracked_file(repository_findings: list[Any]) -> None:
    files = tracked_files()
    assert len(files) > 200  # the whole repository, not an empty listing
    assert unexpected(repository_findings) == []


def test_every_allowance_still_matches_a_finding(repository_findings: list[Any]) -> None:
    seen = {(path, digest) for path, _, digest, _ in repository_findings}
    assert sorted(set(ALLOWED) - seen) == []


def test_the_scanner_flags_planted_secrets(tmp_path: Path) -> None:
    planted = tmp_path / "settings.py"
    aws_key = "AKIA" + "QYLPMN5HHHFPZAM2"  # split so this file itself holds no key
    planted.write_text(f'aws_access_key_id = "{aws_key}"\npassword = "Sup3r-S3creto-Real!"\n')
    kinds = {kind for _, kind, _, _ in scan_file(str(planted))}
    assert {"AWS Access Key", "Secret Keyword"} <= kinds
    assert unexpected(scan_file(str(planted)))


def template_names(template: dict[str, Any]) -> set[str]:
    """What CDK generates and detect-secrets' entropy plugins mistake for keys: logical ids (construct path
    plus an 8-hex-digit hash), output names and asset hashes. Only these are excused in a template."""
    names = {name for section in ("Resources", "Outputs", "Parameters", "Conditions", "Mappings")
             for name in template.get(section) or {}}
    names |= {str(o.get("Export", {}).get("Name", "")) for o in (template.get("Outputs") or {}).values()}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("Ref", "DependsOn", "OutputName", "Fn::ImportValue") and isinstance(item, str | list):
                    names.update([item] if isinstance(item, str) else [i for i in item if isinstance(i, str)])
                elif key == "Fn::GetAtt" and isinstance(item, list) and item:
                    names.add(str(item[0]))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}(\.zip|\.json)?", value):
            names.add(value)

    walk(template)
    return {n for n in names if n}


def template_findings(path: Path) -> list[str]:
    """detect-secrets findings of one template, except CDK-generated names (:func:`template_names`)."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    names = template_names(json.loads(path.read_text()))
    found = SecretsCollection()
    with default_settings():
        found.scan_file(str(path))
    out = []
    for secrets in found.data.values():
        for secret in secrets:
            value = secret.secret_value or ""
            generated = secret.type.endswith("High Entropy String") and any(value in name for name in names)
            if not generated:
                out.append(f"{path.name}:{secret.line_number} {secret.type}")
    return out


def test_template_check_flags_a_secret_in_a_property_but_not_generated_names(tmp_path: Path) -> None:
    template = {"Resources": {"ApiKeyFunctionCurrentVersionBE597105ac2417caf3c3fe9a359cf1fd2c3cf04a": {
        "Type": "AWS::Lambda::Function", "Properties": {"Environment": {"Variables": {
            "API_TOKEN": "hQ7kZ2pX9vL4mN8rT1wY6sB3dF5gJ0cE", "STAGE": "prod"}}}}}}
    path = tmp_path / "Planted.template.json"
    path.write_text(json.dumps(template, indent=1))
    assert [f.split(" ", 1)[1] for f in template_findings(path)] == ["Base64 High Entropy String"]
    del template["Resources"]["ApiKeyFunctionCurrentVersionBE597105ac2417caf3c3fe9a359cf1fd2c3cf04a"][
        "Properties"]["Environment"]["Variables"]["API_TOKEN"]
    path.write_text(json.dumps(template, indent=1))
    assert template_findings(path) == []
