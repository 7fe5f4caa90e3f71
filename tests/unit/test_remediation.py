import pytest

from shared.remediation import UNKNOWN_ACTION, catalogue, remediation_for

DOCUMENTED = ["801", "802", "803", "806", "807", "808", "809", "810", "811", "812", "813", "814",
              "ZtdDeviceDuplicated", "StorageError", "HashNot4k"]


@pytest.mark.parametrize("code", DOCUMENTED)
def test_every_documented_code_has_specific_advice(code: str) -> None:
    entry = remediation_for(code)
    assert entry.code == code and entry.action != UNKNOWN_ACTION and len(entry.action) > 40


@pytest.mark.parametrize(("code", "description"), [
    ("808", None), (None, "ZtdDeviceAssignedToOtherTenant"), (None, "ZtdDeviceAssignedToAnotherTenant"),
    ("ZtdDeviceAssignedToOtherTenant", None), (" 808 ", "whatever"), ("ztddeviceassignedtoothertenant", None),
])
def test_808_is_matched_on_its_number_and_on_both_spellings_of_its_name(code: str | None,
                                                                        description: str | None) -> None:
    assert remediation_for(code, description).code == "808"


def test_names_match_as_well_as_numbers() -> None:
    assert remediation_for(None, "InvalidZtdHardwareHash").code == "802"
    assert remediation_for("StorageError").name == "StorageError"


@pytest.mark.parametrize(("code", "description"), [("999", "Unheard of"), (None, None), ("", ""), ("💥", None)])
def test_unknown_codes_get_a_generic_line_not_a_crash(code: str | None, description: str | None) -> None:
    entry = remediation_for(code, description)
    assert entry.action == UNKNOWN_ACTION and entry.code


def test_catalogue_covers_the_documented_list() -> None:
    assert sorted(entry.code for entry in catalogue()) == sorted(DOCUMENTED)
