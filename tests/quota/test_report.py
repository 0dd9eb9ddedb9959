"""What a task body reports is collected for its call only, and only inside one."""

from __future__ import annotations

import pytest

from resilience_tasks import ConfigurationError, ResilienceError, report_quota, report_usage
from resilience_tasks.errors import OutsideTaskError
from resilience_tasks.quota.report import collecting


def test_reports_outside_a_task_body_are_refused_with_an_error_of_the_tree() -> None:
    with pytest.raises(OutsideTaskError, match="inside the body of a resilient task"):
        report_usage(tokens_in=1)
    with pytest.raises(ResilienceError):
        report_quota({"x-ratelimit-remaining-requests": "1"})


def test_a_call_collects_what_its_body_reports() -> None:
    with collecting() as report:
        report_usage(tokens_in=10, tokens_out=2)
        report_usage(tokens_in=5)
        report_quota({"x-ratelimit-remaining-requests": "7"})
    assert report.units == {"tokens_in": 15.0, "tokens_out": 2.0}
    assert report.quota_headers == [{"x-ratelimit-remaining-requests": "7"}]
    with pytest.raises(OutsideTaskError):  # the collection ended with the call
        report_usage(tokens_in=1)


def test_a_negative_or_non_numeric_amount_names_the_unit() -> None:
    with collecting(), pytest.raises(ConfigurationError, match="tokens_in"):
        report_usage(tokens_in=-1)
