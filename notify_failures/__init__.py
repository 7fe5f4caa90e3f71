"""Queue trigger: one failure chunk per message (see shared/failure_alerts.py and shared/invocation.py)."""

import azure.functions as func

from shared import app, invocation

FUNCTION = invocation.QueueFunction("notify_failures", "failure_queue", lambda: app.failure_notifier().handle)
app.start_failure_notifier()  # when the worker loads the function: a broken ALERT_ROUTES webhook is reported now


def main(msg: func.QueueMessage) -> None:
    invocation.run(FUNCTION, msg.get_body(), msg.id or "", msg.dequeue_count or 1)
