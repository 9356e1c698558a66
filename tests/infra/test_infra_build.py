"""The asset build step and small pure helpers of the infrastructure code."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from infra import build, definitions
from infra.build import BuildPaths
from infra.constructs.waf import MAX_BODY_BYTES, greater_than_regex
from infra.naming import pascal

pytestmark = pytest.mark.infra

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_layer_has_dependencies_but_not_what_lambda_provides(build_paths: BuildPaths) -> None:
    site = build_paths.layer / "python"
    for package in ("aws_lambda_powertools", "pydantic", "pydantic_core", "fhir", "stdnum", "cryptography"):
        assert (site / package).is_dir(), package
    for package in ("boto3", "botocore", "s3transfer"):
        assert not (site / package).exists(), f"{package} is provided by the Lambda runtime"
    assert not (site / "bin").exists(), "console scripts carry this machine's interpreter path"


def test_layer_wheels_target_aarch64_cpython312(build_paths: BuildPaths) -> None:
    compiled = list((build_paths.layer / "python" / "pydantic_core").glob("*.so"))
    assert compiled
    assert all("cpython-312-aarch64-linux-gnu" in so.name for so in compiled)


def test_layer_carries_the_shared_expediente_package(build_paths: BuildPaths) -> None:
    copied = build_paths.layer / "python" / "expediente"
    assert copied.is_dir()
    source = REPO_ROOT / "layers" / "common" / "expediente"
    expected = {p.relative_to(source) for p in source.rglob("*.py") if "__pycache__" not in p.parts}
    assert expected <= {p.relative_to(copied) for p in copied.rglob("*.py")}


@pytest.mark.parametrize("function_id", [f.id for f in definitions.ALL_FUNCTIONS])
def test_function_asset_holds_its_package_without_tests_or_caches(build_paths: BuildPaths,
                                                                 function_id: str) -> None:
    asset = build_paths.functions[function_id]
    assert [p.name for p in asset.iterdir()] == ["functions"]
    packages = {p.name for p in (asset / "functions").iterdir() if p.is_dir()}
    assert packages == {function_id, *definitions.function(function_id).bundles}
    assert (asset / "functions" / function_id / "handler.py").is_file()
    assert not list(asset.rglob("tests"))
    assert not [p for p in asset.rglob("*.pyc") if ".cpython-312" not in p.name], "host bytecode"


def test_up_to_date_layer_is_not_reinstalled(build_paths: BuildPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []
    monkeypatch.setattr(build, "_run", lambda cmd: commands.append(cmd) or "")
    build.build_layer(build_paths.layer.parent)
    assert not [c for c in commands if "install" in c], "the stamp should have skipped the install"


def test_layer_stamp_changes_with_what_decides_the_install() -> None:
    assert build.layer_digest(compiled=False) == build.layer_digest(compiled=False)
    assert build.layer_digest(compiled=False) != build.layer_digest(compiled=True)


def test_declared_function_without_a_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(build.BuildError, match="does not exist"):
        build.build_function("no_such_function", tmp_path)


def test_committed_infra_files_hold_no_machine_paths() -> None:
    files = [REPO_ROOT / "cdk.json", *sorted((REPO_ROOT / "infra").rglob("*.py"))]
    for file in files:
        text = file.read_text()
        assert not re.search(r"(/work/|/root/|/home/|/tmp/)", text), file


@pytest.mark.parametrize("limit", [MAX_BODY_BYTES, 9, 10, 99, 100, 809, 1000, 123456, 999999])
def test_greater_than_regex_matches_exactly_the_larger_numbers(limit: int) -> None:
    pattern = re.compile(greater_than_regex(limit))
    rng = random.Random(limit)
    candidates = {0, 1, limit - 1, limit, limit + 1, limit * 10, limit * 10 + 1, 10 ** len(str(limit))}
    candidates |= {rng.randrange(0, limit * 20) for _ in range(2000)}
    for n in candidates:
        if n < 0:
            continue
        assert bool(pattern.match(str(n))) == (n > limit), n
        assert bool(pattern.match("00" + str(n))) == (n > limit), f"00{n}"
    for text in ("", "-5", "1e9", " 2000000", "2000000 ", "0x200000", "abc"):
        assert not pattern.match(text), text


def test_pascal_case_of_definition_ids() -> None:
    assert pascal("audit_archive") == "AuditArchive"
    assert pascal("patients") == "Patients"
