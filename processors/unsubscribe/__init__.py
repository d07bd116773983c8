"""One-click unsubscribe (RFC 8058): signed tokens, the headers mass mail
carries, and the small web service that takes ``POST /u/TOKEN``."""
