"""batchwatch: the code shared by the function folders (check_batch_status, notify_failures)."""
