"""The web console: ``model`` (the view of the log and the page models,
pure), ``forms`` (form values -> config events, pure), ``auth`` (users,
sessions, CSRF), ``feed`` (reads the topics), ``app`` (the HTTP edge)."""
