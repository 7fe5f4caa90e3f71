"""`python -m shared.audit`: what happened to a batch, a customer, a serial number; and poison re-drive."""
