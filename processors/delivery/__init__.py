"""The delivery processor: sends routed mail over SMTP and records each
attempt. ``smtp.py`` is the SMTP edge (the only aiosmtplib user),
``message.py`` builds the mail, ``backoff.py`` times retries,
``diagnose.py`` and ``probe.py`` explain and test a server's connection.
Secrets are resolved in ``postlane/secrets.py`` only."""
