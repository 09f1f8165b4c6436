"""Logging set-up shared by the CLI and the library.

Library modules call `logging.getLogger(__name__)`; only the CLI configures
handlers, so embedding llmrec in another program keeps that program's logging.
"""

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(verbose: bool = False) -> None:
    """Route llmrec's logs to stderr at INFO (DEBUG with `verbose`)."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S")
    # Third-party libraries are chatty at INFO; keep their warnings only.
    for noisy in ("httpx", "urllib3", "filelock", "sentence_transformers", "dgl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
