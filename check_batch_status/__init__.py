"""Queue trigger: one batch status request per message (see shared/status_check.py and shared/invocation.py)."""

import azure.functions as func

from shared import app, invocation

FUNCTION = invocation.QueueFunction("check_batch_status", "status_queue", lambda: app.status_check().handle)


def main(msg: func.QueueMessage) -> None:
    invocation.run(FUNCTION, msg.get_body(), msg.id or "", msg.dequeue_count or 1)
