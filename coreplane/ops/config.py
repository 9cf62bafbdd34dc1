"""Where the CLI finds its cluster: flags, then the environment, then a config file.

The config file (``~/.config/coreplane/config.yaml``, or ``$COREPLANE_CONFIG``) holds contexts,
as a kubeconfig does::

    current-context: prod
    contexts:
      prod:
        endpoints: [https://10.0.0.1:8470, https://10.0.0.2:8470]
        token-file: ~/.config/coreplane/prod.token   # or token: ...
        cluster: prod-eu-1                            # the name blast-radius asks back
      dev:
        endpoints: [http://127.0.0.1:8470]
        token: dev-admin-token-0123456789

Precedence per value: ``--endpoints``/``--token`` flags, then ``COREPLANE_ENDPOINTS``
(comma-separated) / ``COREPLANE_TOKEN``, then the context (``--context`` or the file's
current-context). A token is never printed: `redacted()` is how a context is shown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from coreplane.errors import InvalidArgument

__all__ = ["Settings", "config_path", "load_file", "resolve", "save_file"]


def config_path() -> Path:
    env = os.environ.get("COREPLANE_CONFIG")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "coreplane" / "config.yaml"


def load_file(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"contexts": {}}
    except OSError as exc:
        raise InvalidArgument("config", f"cannot read {path}: {exc}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InvalidArgument("config", f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("contexts", {}), dict):
        raise InvalidArgument("config", f"{path}: expected a map with 'contexts'")
    data.setdefault("contexts", {})
    return data


def save_file(data: dict[str, Any], path: Path | None = None) -> Path:
    """Write the config file owner-only (it may hold tokens)."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=True)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Settings:
    endpoints: tuple[str, ...]
    token: str
    context: str  # "" when none was used
    cluster: str  # the name from the context ("" if unset; the cluster's own key wins)

    def __repr__(self) -> str:  # never show the token
        return (
            f"Settings(endpoints={self.endpoints!r}, token=<redacted>, "
            f"context={self.context!r}, cluster={self.cluster!r})"
        )


def _token_of(ctx: dict[str, Any]) -> str:
    if ctx.get("token"):
        return str(ctx["token"])
    if ctx.get("token-file"):
        path = Path(str(ctx["token-file"])).expanduser()
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InvalidArgument("token-file", f"cannot read {path}: {exc}") from None
    return ""


def resolve(
    *,
    endpoints: str | None,
    token: str | None,
    context: str | None,
    environ: dict[str, str] | None = None,
    path: Path | None = None,
) -> Settings:
    env = os.environ if environ is None else environ
    data = load_file(path)
    name = context or env.get("COREPLANE_CONTEXT") or data.get("current-context") or ""
    ctx: dict[str, Any] = {}
    if name:
        ctx = data["contexts"].get(name) or {}
        if not ctx and context:
            raise InvalidArgument("context", f"no context {name!r} in {path or config_path()}")
    raw = endpoints or env.get("COREPLANE_ENDPOINTS") or ctx.get("endpoints") or []
    if isinstance(raw, str):
        raw = [e.strip() for e in raw.split(",") if e.strip()]
    eps = tuple(str(e) for e in raw)
    tok = token or env.get("COREPLANE_TOKEN") or _token_of(ctx)
    if not eps:
        raise InvalidArgument(
            "endpoints",
            "no endpoints: pass --endpoints, set COREPLANE_ENDPOINTS or use a config context",
        )
    if not tok:
        raise InvalidArgument(
            "token",
            "no token: pass --token, set COREPLANE_TOKEN or put "
            "token/token-file in a config context",
        )
    return Settings(eps, tok, name, str(ctx.get("cluster") or ""))


def redacted(ctx: dict[str, Any]) -> dict[str, Any]:
    out = dict(ctx)
    if "token" in out:
        out["token"] = "<redacted>"
    return out
