"""The delivery processor: sends routed mail over SMTP and records each
attempt. ``connection.py`` and ``session.py`` are the SMTP edge (the only
aiosmtplib users: opening and closing a connection; the mail transactions
over it), ``pool.py`` its pool of sessions and ``deliver``, ``errors.py`` what an attempt gives and
the session errors, ``policy.py`` the SMTP trouble policy (defer, fail, fail
over, back-off), ``message.py`` builds the mail, ``sender.py`` runs one attempt
for the agent, ``diagnose.py`` and ``probe.py`` explain and test a server's
connection. Secrets are resolved in ``streams/secrets.py`` only."""
