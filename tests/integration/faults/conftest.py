"""The faults world: the notes world (a chain made by the operator command, staff with practitioners and
signing keys, a patient with an open visit) plus the fault injector on the functions' botocore session."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest

import tests.conftest as root
from tests.integration.faults.injector import Injector, install
from tests.integration.faults.scenarios import Clinic
from tests.integration.imaging.conftest import imaging, visit  # noqa: F401  (fixtures, requested by name)
from tests.integration.notes.conftest import (  # noqa: F401  (fixtures, requested by name)
    Chain,
    Staff,
    admin_world,
    chain,
    make_chain,
    open_visit,
    other_chain,
    patient_id,
    physician,
    reception,
)
from tests.support import aws as support


@pytest.fixture
def injector(admin_world: object) -> Injector:
    """Installed before the functions' clients are (re)made, so every client carries the hook."""
    injector = install()
    support.reset_caches()
    return injector


@pytest.fixture
def clinic(injector: Injector, chain: Chain, physician: Staff, reception: Staff,  # noqa: F811
           patient_id: str) -> Clinic:  # noqa: F811
    return _clinic(chain, physician, reception, patient_id)


def _clinic(chain: Chain, physician: Staff, reception: Staff, patient_id: str) -> Clinic:  # noqa: F811
    opened = open_visit(physician, patient_id)
    clinic = Clinic(chain=chain, physician=physician, reception=reception, nurse=chain.staff("nurse"),
                    lab=chain.staff("lab"), pharmacist=chain.staff("pharmacist"), patient=patient_id, visit=opened)
    chain.world.world.published()  # start with an empty event queue
    return clinic


@pytest.fixture(scope="module")
def shared_clinic() -> Iterator[tuple[Injector, Clinic]]:
    """The same world as ``clinic``, built once for a whole test module (the write fault sweep: every
    route's runs are compared with its own reference run and snapshots, so routes may share a world).
    Built by the very fixture functions ``world`` and ``admin_world`` (unwrapped), so it
    cannot drift from them. A module using it must not also request the function-scoped world: a
    second ``mock_aws`` would reset this one."""
    with pytest.MonkeyPatch.context() as patch:
        worlds = inspect.unwrap(root.world)(patch)
        world = next(worlds)
        try:
            admin = inspect.unwrap(admin_world)(world, patch)
            injector = install()
            support.reset_caches()
            chain = make_chain(admin, "Red Clínica A")
            reception = chain.staff("reception", practitioner=False)
            yield injector, _clinic(chain, chain.staff("physician"), reception, chain.register_patient(reception))
        finally:
            next(worlds, None)  # the world's own teardown


# ------------------------------------------------------------------ figures of the write fault sweep ---

_SWEPT: dict[str, dict[str, object]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect each swept route's figures (``record_property("faults", ...)``; they cross xdist workers)."""
    for name, value in report.user_properties:
        if name == "faults" and isinstance(value, dict):
            _SWEPT[str(value["route"])] = value


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _SWEPT:
        return
    totals = {key: sum(int(str(f[key])) for f in _SWEPT.values())
              for key in ("calls", "injected", "succeeded", "unavailable", "lost_events", "error_audit", "prepared")}
    terminalreporter.write_line(
        f"write fault sweep: {len(_SWEPT)} routes passed, {totals['calls']} AWS calls, {totals['injected']} faults "
        f"injected: {totals['unavailable']} clean 503 with Retry-After, {totals['succeeded']} full success "
        f"({totals['lost_events']} without the request's events on the bus: PutEvents failed after the commit), "
        f"0 traces, 0 other answers "
        f"({totals['error_audit']} audit records of failed attempts; {totals['prepared']} requests prepared, "
        f"the other runs retried the request of a clean 503)")
