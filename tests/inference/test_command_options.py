"""Command-line options that would do nothing on the path they are given are refused, not ignored
(issue 9 item 5). ``train``'s are in test_training.py, ``evaluate``'s in test_evaluation.py."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--job", "1", "--data", "d"], "--data does nothing with --job"),
        (["--job", "1", "--holdout-fraction", "0.2"], "--holdout-fraction does nothing with --job"),
        (["--job", "1", "--no-register"], "--no-register does nothing with --job"),
        (["--data", "d", "--name", "n", "--holdout", "h", "--holdout-fraction", "0.2"], "does nothing with --holdout"),
    ],
)
def test_adapt_refuses_options_that_would_do_nothing(db, arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("adapt", *arguments)


def test_adapt_still_checks_the_default_holdout_fraction_range(db, tmp_path):
    with pytest.raises(CommandError, match="between 0 and 1"):
        call_command("adapt", "--data", str(tmp_path), "--name", "n", "--holdout-fraction", "1.5")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["some-version", "--rollback"], "--rollback brings back the previous version"),
        (["--rollback", "--force", "--reason", "r"], "--rollback brings back the previous version"),
        (["some-version", "--reason", "because"], "--reason does nothing without --force"),
    ],
)
def test_activate_model_refuses_options_that_would_do_nothing(db, arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("activate_model", *arguments)
