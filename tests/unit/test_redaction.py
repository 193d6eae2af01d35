"""Redaction: secrets are masked in strings, formatting, logging and exception text."""

from __future__ import annotations

import logging
import pickle

import pytest

from deploy.redaction import MASK, RedactingFilter, Secret, redact


def test_secret_masks_itself():
    secret = Secret("hunter2-but-longer")
    assert str(secret) == MASK and repr(secret) == f"Secret({MASK})" and f"{secret}" == MASK
    assert secret.reveal() == "hunter2-but-longer"
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_redact_replaces_every_occurrence_and_lines_of_multiline_secrets():
    Secret("line-one-secret\nline-two-secret")
    text = redact("a line-one-secret b line-two-secret c line-one-secret")
    assert text == f"a {MASK} b {MASK} c {MASK}"


def test_short_values_are_not_registered():
    Secret("abc")
    assert redact("abc abc") == "abc abc"


def test_logging_filter_redacts_arguments_and_tracebacks(caplog):
    value = "tok-0123456789abcdef"
    Secret(value)
    logger = logging.getLogger("citadel-test-redaction")
    handler_records = []

    class Keep(logging.Handler):
        def emit(self, record):
            handler_records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("running %s", f"curl -H 'X-Token: {value}'")
        try:
            raise RuntimeError(f"command failed: {value}")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    assert handler_records and all(value not in line for line in handler_records)
    assert any("Traceback" in line and MASK in line for line in handler_records)
