"""The status projection: every event of a mail folded into its status."""
