from __future__ import annotations

import pytest
from router_fakes import FakeAPI

from antiloop.outbox import Outbox
from antiloop.store.base import Store


@pytest.fixture
def api() -> FakeAPI:
    return FakeAPI()


@pytest.fixture
def outbox(api: FakeAPI, store: Store) -> Outbox:
    return Outbox(api, store, rate_limits=False, reply_window=3.0)
