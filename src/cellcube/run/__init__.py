"""The end-to-end job and the run directory."""
