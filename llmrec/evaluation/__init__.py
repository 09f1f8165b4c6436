"""Ranking metrics, the full-ranking evaluator and the popularity baseline."""

from llmrec.evaluation.evaluator import Evaluator, ScorerError
from llmrec.evaluation.interactions import interactions_to_csr
from llmrec.evaluation.popularity import popularity_scorer

__all__ = ["Evaluator", "ScorerError", "interactions_to_csr", "popularity_scorer"]
