"""GPU-only runs of the full-size step benchmarks: the script a session with a lent GPU runs
(run_fullsize.sh), and the post-processing it calls (targets.py); see README.md here."""
