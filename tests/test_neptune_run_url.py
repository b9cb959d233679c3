"""A Neptune server run's page, checked against the address Neptune's own client builds.

No Neptune server can run here. The client builds a run's page from strings: its backend's
``get_run_url`` is ``<app address>/<workspace>/<project>/e/<sys/id>``, with the app address
from the server's configuration (``get_display_address``). The client's own backend is used
here with that configuration given instead of fetched: the only part that stands in for the
server. trackkit's address must be the client's for the same inputs.
"""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest

from trackkit.backends.neptune import NeptuneBackend

pytest.importorskip("neptune")

from neptune.internal.backends.api_model import ClientConfig
from neptune.internal.backends.hosted_neptune_backend import HostedNeptuneBackend

SECRET = "sekret-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def _no_neptune_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NEPTUNE_PROJECT", "NEPTUNE_API_TOKEN", "NEPTUNE_MODE", "TRACKKIT_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def neptune_backend(app_address: str) -> HostedNeptuneBackend:
    """The client's backend for a server whose app is at ``app_address``, not connected: the
    server's configuration (what the client fetches when it connects) is given."""
    backend: Any = object.__new__(HostedNeptuneBackend)
    backend._client_config = ClientConfig(
        api_url=app_address,
        display_url=app_address,
        _missing_features=frozenset(),
        version_info=None,
        multipart_config=None,
        sys_name_set_by_backend=False,
    )
    return backend


def token(address: str) -> str:
    return base64.b64encode(
        json.dumps({"api_address": address, "api_key": SECRET}).encode()
    ).decode()


def trackkit_backend(api_address: str, project: str = "ws/proj") -> NeptuneBackend:
    return NeptuneBackend(mode="async", project=project, api_token=token(api_address))


def test_the_page_is_the_clients_on_the_address_the_server_announces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server announces its app at another address than its API's: trackkit takes it
    from the project's page, as the client gives it."""
    client = neptune_backend("https://app.nep.example:8443/ui")
    backend = trackkit_backend("https://api.nep.example")
    project = SimpleNamespace(
        get_url=lambda: client.get_project_url(
            project_id="p-1", workspace="ws", project_name="proj"
        )
    )
    monkeypatch.setattr(backend._client, "project_object", lambda: project)
    for sys_id in ("PROJ-7", "PROJ-123"):
        expected = client.get_run_url(
            run_id="r", workspace="ws", project_name="proj", sys_id=sys_id
        )
        assert backend.run_url(sys_id) == expected
    assert expected == "https://app.nep.example:8443/ui/ws/proj/e/PROJ-123"
    backend.close()


@pytest.mark.parametrize(
    ("api_address", "app_address"),
    [
        ("https://neptune.example.com", "https://neptune.example.com"),
        ("http://10.0.0.5:8080", "http://10.0.0.5:8080"),
        ("https://Nep.Example.com:8443/neptune", "https://Nep.Example.com:8443/neptune"),
        ("http://[::1]:5000", "http://[::1]:5000"),
        # credentials never go into a link: the client's address for the same server
        ("https://ana:pw%2F1@nep.example:8443", "https://nep.example:8443"),
    ],
)
def test_without_the_servers_word_the_page_is_on_the_api_address(
    api_address: str, app_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the client cannot give the project's page, the API's address is the app's (one
    Neptune server serves both): the same page as the client's for that address."""
    backend = trackkit_backend(api_address, project="team/ride-duration")

    def unreachable() -> Any:
        raise ConnectionError("no server here")

    monkeypatch.setattr(backend._client, "project_object", unreachable)
    expected = neptune_backend(app_address).get_run_url(
        run_id="r", workspace="team", project_name="ride-duration", sys_id="RIDE-42"
    )
    assert backend.run_url("RIDE-42") == expected
    assert "pw" not in expected and "ana" not in expected
    backend.close()
