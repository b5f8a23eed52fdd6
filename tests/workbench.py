"""What an admin and an agent's workbench do over HTTP to bring an agent in: shared by the tests
and bench/ (so it imports nothing of the application)."""

from __future__ import annotations

import httpx


async def create_agent_over_api(
    http: httpx.AsyncClient,
    admin: dict[str, str],
    agent_id: str,
    *,
    skill_groups: list[str] | None = None,
    max_concurrent: int = 2,
    online: bool = True,
) -> str:
    """Create an agent as an admin does (`admin`: the admin's headers) and, unless `online` is
    False, put them online with their own token, as their workbench does. Returns the token."""
    created = await http.post(
        "/v1/agents",
        headers=admin,
        json={
            "id": agent_id,
            "name": agent_id.title(),
            "skill_groups": skill_groups or ["general"],
            "max_concurrent": max_concurrent,
        },
    )
    if created.status_code != 201:
        raise RuntimeError(
            f"creating agent {agent_id} answered {created.status_code}: {created.text}"
        )
    token: str = created.json()["token"]
    if online:
        status = await http.put(
            f"/v1/agents/{agent_id}/status",
            headers={"Authorization": f"Bearer {token}"},
            json={"status": "online"},
        )
        if status.status_code != 200:
            raise RuntimeError(f"agent {agent_id} going online answered {status.status_code}")
    return token
