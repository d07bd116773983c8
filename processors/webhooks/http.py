"""The one place webhooks are posted: an aiohttp client (one session per
worker, connections reused per endpoint)."""

from __future__ import annotations

import asyncio

import aiohttp

from .core import SIGNATURE_HEADER, Answer, answer_of_status, sign

_EXCERPT = 200


class Poster:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": "Postlane-Webhooks/1"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, url: str, body: bytes, secret: bytes, now: float,
                   extra: dict[str, str] | None = None) -> Answer:
        """POST ``body`` signed with ``secret``; every failure becomes an
        Answer in words (never an exception)."""
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: sign(secret, int(now), body), **(extra or {})}
        try:
            session = await self.session()
            async with session.post(url, data=body, headers=headers,
                                    allow_redirects=False) as resp:
                text = (await resp.content.read(_EXCERPT)).decode("utf-8", "replace")
                return answer_of_status(resp.status, " ".join(text.split()))
        except TimeoutError:
            return Answer(False, True, 0, f"no answer from {url} within {self.timeout:g} s")
        except aiohttp.ClientConnectorError as exc:
            return Answer(False, True, 0, f"cannot connect to {url}: {exc.os_error or exc}")
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                aiohttp.ClientResponseError) as exc:
            return Answer(False, True, 0, f"{url} answered garbage (not HTTP): "
                          f"{type(exc).__name__}: {exc}")
        except aiohttp.ClientError as exc:
            return Answer(False, True, 0, f"posting to {url} failed: "
                          f"{type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            raise
        except (OSError, ValueError) as exc:
            return Answer(False, True, 0, f"posting to {url} failed: {exc}")
