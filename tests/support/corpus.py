"""The shared corpus of real AWS message bodies (``shared/corpus/aws-messages`` beside the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest


CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "aws-messages"


def corpus_body(name: str) -> str:
    """The SQS body stored in corpus file *name*; skips the test when the corpus is absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"message corpus not found at {CORPUS}")
    return (CORPUS / name).read_text(encoding="utf-8")
