"""Signed webhooks: what became of each mail, posted to services' endpoints."""
