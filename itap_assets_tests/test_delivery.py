"""One notice against a real receiver: backoff on 429, 5xx and no answer up to max_attempts, no retry on another
4xx, every attempt recorded."""

import polars as pl
import pytest

from itap_assets import storage
from itap_assets.core.receivers import WebhookReceiver
from itap_assets.delivery import SCHEMA, deliver
from itap_assets_tests.http_receiver import Receiver


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "itap.duckdb"
    with storage.open_ledgers(path, SCHEMA):
        pass
    return path


def attempts(db) -> pl.DataFrame:
    with storage.connect(db) as con:
        return storage.frame_of(con.sql("SELECT * FROM notification_attempts ORDER BY attempt"))


def hook(url: str) -> WebhookReceiver:
    return WebhookReceiver(name="ops", type="webhook", url=url, backoff_s=0.001, max_attempts=3, timeout_s=2)


@pytest.mark.parametrize("answers, final, tried", [
    ([503, 429, 200], 200, [503, 429, 200]),  # retried until accepted
    ([500, 502, 503, 200], 503, [500, 502, 503]),  # gives up after max_attempts
    ([400, 200], 400, [400]),  # another 4xx is not retried
])
def test_backoff_on_429_and_5xx_only(db, answers, final, tried):
    with Receiver() as receiver:
        receiver.actions["/hook"] += answers
        outcome = deliver(db, hook(f"{receiver.url}/hook"), "n1", '{"x": 1}')
        assert [r["key"] for r in receiver.requests] == ["n1"] * len(tried)
        assert all(r["body"] == '{"x": 1}' for r in receiver.requests)
    assert outcome.http_status == final
    recorded = attempts(db)
    assert recorded["http_status"].to_list() == tried and recorded["attempt"].to_list() == [1, 2, 3][:len(tried)]
    assert recorded["error"].is_null().to_list() == [a < 300 for a in tried]


def test_no_answer_is_retried_and_recorded_as_an_error(db):
    with Receiver() as receiver:
        url = f"{receiver.url}/hook"
    outcome = deliver(db, hook(url), "n1", "{}")  # the server is gone: connection refused
    assert outcome.http_status is None and "ConnectionError" in outcome.error
    assert attempts(db)["http_status"].null_count() == 3
