"""The former name of stats.py, kept only for evaluate.py and lockstep.py until their imports name stats."""
from nanorlvr.stats import pass_at_k, replacement_gate, token_metrics

__all__ = ["pass_at_k", "replacement_gate", "token_metrics"]
