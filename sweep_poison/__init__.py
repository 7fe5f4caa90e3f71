"""Timer trigger: every 10 minutes, what the host moved to a poison queue gets a never-expiring envelope
(see shared/poison_sweep.py)."""

import azure.functions as func

from shared import poison_sweep, telemetry


def main(timer: func.TimerRequest) -> None:
    telemetry.configure()
    poison_sweep.run()
