"""Models: per-worker training functions (run inside Ray Train workers) and the ensemble artifact."""
