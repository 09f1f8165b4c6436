"""The graph recommender: data loading, graph engines, models, losses, trainer, reports.

Entry points: `llmrec.recommender.runner.train_and_evaluate` (the `llmrec train`
command) and `llmrec.recommender.api.train_base_model` (for other stages).
Submodules import torch; import them only where training happens.
"""
