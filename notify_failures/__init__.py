"""Queue trigger: one failure chunk per message (see shared/failure_alerts.py)."""

import azure.functions as func

from shared.app import get_app

get_app()  # a missing or invalid setting fails at start-up, naming the setting


def main(msg: func.QueueMessage) -> None:
    get_app().failure_notifier.handle(msg.get_body(), msg.id or "")
