"""Every engine test runs twice: with the synchronous loop and with asynchronous scheduling (the fake runner
then resolves placeholder tokens the way the real runner does on device)."""

import engine_fakes
import pytest


@pytest.fixture(autouse=True, params=[False, True], ids=["sync", "async"])
def scheduling_mode(request, monkeypatch):
    monkeypatch.setattr(engine_fakes, "DEFAULT_ASYNC", request.param)
    return request.param
