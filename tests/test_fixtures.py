"""The test suite's own `mlflow server` fixture holds on a loaded machine.

A start that is too slow fails the test that asked for the server, and only that one: the next
test that needs the server starts it again (a session-scoped fixture would re-raise the first
failure for every test that shares it). The servers are real `mlflow server` processes.
"""

from __future__ import annotations

import pytest

from conftest import ServerStartError, SharedServer, healthy

pytest.importorskip("mlflow")
pytestmark = pytest.mark.server


def test_a_slow_start_fails_only_the_test_that_asked(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = SharedServer(tmp_path_factory, timeout=0.05)  # no server is healthy that fast
    try:
        with pytest.raises(ServerStartError, match=r"did not become healthy within 0 s") as e:
            server.url()  # the first test's start: too slow
        assert "TRACKKIT_TEST_SERVER_TIMEOUT" in str(e.value)
        server.timeout = None  # the next test's start waits as long as a loaded machine needs
        url = server.url()
        assert healthy(url)
        assert server.url() == url  # started once, then shared
    finally:
        server.stop()
    assert not healthy(url)
