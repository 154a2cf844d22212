"""In-process checks of the app that a loopback-bound process cannot show."""

from __future__ import annotations

from pathlib import Path

import httpx

from auren.services.neuros import create_app
from auren.settings import Settings


async def test_without_auth_configured_only_loopback_clients_are_served(tmp_path: Path) -> None:
    app = create_app(Settings(auren_data_dir=tmp_path))
    async with app.router.lifespan_context(app):
        for host, status in (("203.0.113.7", 403), ("127.0.0.1", 200), ("::1", 200)):
            transport = httpx.ASGITransport(app=app, client=(host, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://neuros") as c:
                response = await c.post("/chat", json={"message": "hi", "user_id": "u"})
                assert response.status_code == status, (host, response.text)
                listed = await c.get("/api/v1/users/u/conversations")
                assert listed.status_code == status
