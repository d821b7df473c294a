"""Evaluating D4RT: metrics as their authors define them, ``evaluate`` over clips, and training diagnostics."""
