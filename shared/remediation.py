"""What an admin should do about each device upload error (Windows Autopilot / DDS codes)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Remediation:
    code: str
    name: str
    action: str

    @property
    def label(self) -> str:
        """How alerts, the digest and the report name the code: "808 ZtdDeviceAssignedToOtherTenant"."""
        return self.code if self.code == self.name else f"{self.code} {self.name}"


_CATALOGUE = (
    Remediation("801", "InvalidZtdRequestBody",
                "The upload request was malformed or had no tenant id. This is a service-side problem that "
                "should not happen: upload the device again, and open a Partner Center support case if it repeats."),
    Remediation("802", "InvalidZtdHardwareHash",
                "The hardware hash is invalid or has empty fields. Capture it again on the device and upload it "
                "exactly as produced (the 4K hash); check manufacturer and serial with "
                "'wmic baseboard get manufacturer, serialnumber'."),
    Remediation("803", "MissingZtdSerialNumberAndProductKey",
                "Neither a serial number nor a product key was given. Add the serial number (with manufacturer and "
                "model) or the product key (PKID) and upload again."),
    Remediation("806", "ZtdDeviceAlreadyAssigned",
                "The device is already registered to this customer. Find the serial in Intune > Windows Autopilot "
                "devices and do not import it again; if it is not there, remove the stale record in Microsoft "
                "Store for Business and upload again."),
    Remediation("807", "ZtdDeviceIsNotRegistered",
                "The device is not registered to this tenant, so it cannot be changed or removed here. Check the "
                "customer and the serial number."),
    Remediation("808", "ZtdDeviceAssignedToOtherTenant",
                "The device is registered to another tenant. Ask the previous owner, reseller or test tenant to "
                "deregister it; if they cannot, open a Microsoft support case with the device CSV, proof of "
                "ownership (original invoice showing the serial and company name) and the output of "
                "'Mdmdiagnosticstool.exe -area Autopilot -cab c:\\out.cab'."),
    Remediation("809", "ZtdProfileIsNotRegistered",
                "The Autopilot profile being assigned is not registered to this tenant. Assign a profile created "
                "through Partner Center for this customer."),
    Remediation("810", "ZtdProfileAssignedToOtherTenant",
                "The profile belongs to another tenant. Use a profile of this customer; open a support case if it "
                "repeats."),
    Remediation("811", "ZtdDeviceRegisteredByOtherTenant",
                "The device was registered by another tenant, so this tenant cannot delete it. Ask the registering "
                "partner or tenant to remove it."),
    Remediation("812", "ZtdDeviceNotFound",
                "Manufacturer, model and serial number matched no hardware hash. Make them match the device's SMBIOS "
                "values exactly, or register with the hardware hash or product key instead."),
    Remediation("813", "ZtdDeviceIsNotUnique",
                "The device cannot be identified uniquely from its hash. Register it with its hardware hash together "
                "with the serial number or product key."),
    Remediation("814", "ZtdDeviceAlreadyAadRegistered",
                "A device object already exists in Microsoft Entra ID. Remove the stale device object in Entra ID, "
                "then upload again."),
    Remediation("HashNot4k", "HashNot4k",
                "The hardware hash is not a 4K hash. Capture it again with the current Get-WindowsAutopilotInfo tool "
                "and upload it unchanged."),
    Remediation("ZtdDeviceDuplicated", "ZtdDeviceDuplicated",
                "The same hardware hash appeared more than once in the upload; only one copy was processed. Check "
                "the result of the other copy and remove the duplicate rows from the upload."),
    Remediation("StorageError", "StorageError",
                "A temporary service error. Upload the device again later; open a support case if it persists."),
)
_ALIASES = {"ztddeviceassignedtoanothertenant": "808"}  # the Autopilot docs' spelling of 808
_BY_KEY = {
    **{entry.code.lower(): entry for entry in _CATALOGUE},
    **{entry.name.lower(): entry for entry in _CATALOGUE},
    **{alias: next(e for e in _CATALOGUE if e.code == code) for alias, code in _ALIASES.items()},
}
UNKNOWN_ACTION = ("No specific guidance for this error. Check the device's entry in Partner Center and the "
                  "Windows Autopilot registration troubleshooting guide, then upload it again or open a support case.")


def remediation_for(error_code: str | None, error_description: str | None = None) -> Remediation:
    """Match on the code first (numbers and names both appear there), then on the description."""
    for candidate in (error_code, error_description):
        if candidate:
            entry = _BY_KEY.get(candidate.strip().lower())
            if entry is not None:
                return entry
    label = (error_code or error_description or "unknown").strip() or "unknown"
    return Remediation(label, error_description or label, UNKNOWN_ACTION)


def catalogue() -> tuple[Remediation, ...]:
    return _CATALOGUE
