"""The rate limiter: daily limits, pacing, lanes and schedule (see agent.py)."""
