"""The pipeline benchmark (not part of CI): python -m bench.pipeline."""
