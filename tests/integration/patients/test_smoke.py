from tests.integration.patients.conftest import make_curp, patient_body


def test_registered_patient_can_be_read_back(reception):
    curp = make_curp()
    created = reception.create(patient_body(curp))
    assert created.status == 201, created.body
    pid = created.body["id"]
    assert created.headers["ETag"] == 'W/"1"'
    read = reception.read(pid)
    assert read.status == 200
    assert read.body["name"][0]["family"] == "PÉREZ GÓMEZ"
    assert read.body["identifier"][0]["value"] == curp
