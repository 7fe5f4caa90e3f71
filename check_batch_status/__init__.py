"""Queue trigger: one batch status request per message (see shared/status_check.py)."""

import azure.functions as func

from shared.app import get_app

get_app()  # a missing or invalid setting fails at start-up, naming the setting


def main(msg: func.QueueMessage) -> None:
    get_app().status_check.handle(msg.get_body(), msg.id or "", msg.dequeue_count or 1)
