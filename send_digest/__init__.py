"""Timer trigger on DIGEST_SCHEDULE: yesterday's digest onto the failure queue (see shared/digest.py)."""

import azure.functions as func

from shared import digest, telemetry


def main(timer: func.TimerRequest) -> None:
    telemetry.configure()
    digest.run()
