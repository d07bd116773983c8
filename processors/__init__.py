"""Postlane's stream processors: each a pure core (``core.py``) and a thin
Faust agent module (``agent.py``)."""
