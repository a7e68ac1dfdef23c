"""Evaluation on BEIR datasets: trec_eval-compatible metrics, stage runs, depth sweeps and reports."""
