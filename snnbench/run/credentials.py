"""Passwords in URLs (Optuna storages, MLflow tracking URIs, any future one): taken out once,
at the door, so that no file, record or log line holds them.

A URL is parsed by the library that defines its syntax — SQLAlchemy's ``make_url`` for
database URLs, :mod:`urllib.parse` for the rest — never matched with a pattern. Its
password (``user:PASSWORD@`` or a ``password=``/``passwd=``/``pwd=`` query parameter) is
replaced by ``***``. The real URL is kept in the environment variable :data:`URLS_ENV`
(masked URL -> real URL), which the processes started from here (sweep jobs, SLURM jobs)
inherit; code that connects calls :func:`reveal` on the masked URL it was configured with.

Better still, keep passwords off the command line altogether: PostgreSQL's own
``PGPASSWORD`` / ``~/.pgpass`` (``PGPASSFILE``) and MLflow's ``MLFLOW_TRACKING_PASSWORD``
are read by the drivers themselves, so the URL carries no password at all.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

#: Environment variable: JSON object, masked URL -> real URL.
URLS_ENV = "SNNBENCH_URLS"
#: What stands for a password.
MASK = "***"
#: Query parameters that hold a password (lower case).
PASSWORD_PARAMS = ("password", "passwd", "pwd")
#: Schemes parsed with urllib (the rest are database URLs, parsed with SQLAlchemy).
WEB_SCHEMES = ("http", "https", "file", "databricks", "mlflow-artifacts", "s3", "gs")

_passwords: set[str] = set()  # every password seen in this process (for redact)


def split_url(url: str) -> tuple[str, list[str]]:
    """``(url with its passwords masked, the passwords)``; a text that is not a URL, or a
    URL that cannot be parsed, comes back as it is with no password."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme or any(c.isspace() for c in scheme):
        return url, []
    try:
        if scheme.lower() in WEB_SCHEMES:
            return _split_web(url)
        return _split_db(url)
    except Exception:  # not a URL after all
        return url, []


def _split_db(url: str) -> tuple[str, list[str]]:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    found = [parsed.password] if parsed.password not in (None, "", MASK) else []
    query = dict(parsed.query)
    for key, value in parsed.query.items():
        if key.lower() in PASSWORD_PARAMS:
            values = [value] if isinstance(value, str) else list(value)
            found += [v for v in values if v and v != MASK]
            query[key] = MASK
    if not found:
        return url, []
    masked = parsed.set(query=query).render_as_string(hide_password=True)  # password: ***
    return masked.replace(quote(MASK, safe=""), MASK), found


def _split_web(url: str) -> tuple[str, list[str]]:
    from urllib.parse import unquote

    parts = urlsplit(url)
    found: list[str] = []
    netloc = parts.netloc
    if parts.password and unquote(parts.password) != MASK:
        found.append(unquote(parts.password))
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k.lower() in PASSWORD_PARAMS and v not in ("", MASK) for k, v in pairs):
        found += [v for k, v in pairs if k.lower() in PASSWORD_PARAMS and v not in ("", MASK)]
        query = urlencode([(k, MASK if k.lower() in PASSWORD_PARAMS else v) for k, v in pairs])
    if not found:
        return url, []
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)), found


def _known() -> dict[str, str]:
    try:
        known = json.loads(os.environ.get(URLS_ENV) or "{}")
    except ValueError:
        return {}
    return known if isinstance(known, dict) else {}


def register(url: str) -> str:
    """The masked form of ``url``; when it holds a password, the real URL is added to
    :data:`URLS_ENV` (for this process and the ones it starts) and the password to what
    :func:`redact` hides."""
    masked, found = split_url(url)
    if found:
        known = _known()
        known[masked] = url
        os.environ[URLS_ENV] = json.dumps(known)
        _passwords.update(found)
    return masked


def reveal(value: str) -> str:
    """The real URL behind a masked one (from :data:`URLS_ENV`), else ``value`` itself.

    Raises ``RuntimeError`` for a masked URL whose real form is not in the environment
    (a job started by something other than snnbench's command or sweeper)."""
    real = _known().get(value)
    if real is not None:
        _passwords.update(split_url(real)[1])
        return real
    if MASK in value and "://" in value:
        raise RuntimeError(
            f"{value!r} has its password masked and ${URLS_ENV} does not hold "
            "the real one (start jobs through snnbench, or give the password by PGPASSWORD, "
            "~/.pgpass or MLFLOW_TRACKING_PASSWORD)"
        )
    return value


def _forms(password: str) -> set[str]:
    """How a password may appear in text: as is, and percent-encoded both ways."""
    return {password, quote(password, safe=""), quote_plus(password)}


def redact(text: str) -> str:
    """``text`` with every password hidden: those registered here or in :data:`URLS_ENV`,
    and those of any URL in it (each whitespace-separated word that parses as one)."""
    for real_url, masked in ((v, k) for k, v in _known().items()):
        text = text.replace(real_url, masked)
    words = []
    for word in re.split(r"(\s+)", text):  # words and the whitespace between them
        words.append(_mask_word(word) if "://" in word else word)
    text = "".join(words)
    secrets = set(_passwords)
    for real_url in _known().values():
        secrets.update(split_url(real_url)[1])
    for secret in sorted(secrets, key=len, reverse=True):
        for form in sorted(_forms(secret), key=len, reverse=True):
            if form:
                text = text.replace(form, MASK)
    return text


def _mask_word(word: str) -> str:
    """``word`` with the URL in it masked: the URL starts at its scheme (the letters, digits,
    ``+``, ``-`` and ``.`` before ``://``) and ends before trailing quotes and punctuation."""
    at = word.index("://")
    start = at
    while start > 0 and (word[start - 1].isalnum() or word[start - 1] in "+-."):
        start -= 1
    end = len(word)
    while end > at + 3 and word[end - 1] in "'\"()[]{}<>,;":
        end -= 1
    masked, found = split_url(word[start:end])
    return word[:start] + masked + word[end:] if found else word


def hide_overrides(args: Iterable[str]) -> list[str]:
    """Command-line overrides with every URL's password masked (each registered, so the
    real URL travels in the environment). ``key=value``, ``+key=value``, values quoted with
    ``'`` or ``"``; anything else is kept as it is."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or "://" not in value:
            out.append(arg)
            continue
        quote_char = value[0] if value[:1] in ("'", '"') and value.endswith(value[0]) else ""
        inner = value[1:-1] if quote_char else value
        masked = register(inner)
        out.append(f"{key}={quote_char}{masked}{quote_char}")
    return out


def mask_config(cfg: Any) -> None:
    """Mask, in place, every URL password in a composed config's string values (each
    registered like :func:`register`), so records, checkpoints and trackers never see it —
    also when it came from a YAML file rather than the command line."""
    from omegaconf import DictConfig, ListConfig, open_dict, read_write

    keys = list(cfg.keys()) if isinstance(cfg, DictConfig) else range(len(cfg))
    for key in keys:
        node = cfg._get_node(key)
        if isinstance(node, (DictConfig, ListConfig)):
            mask_config(node)
            continue
        value = node._value() if node is not None else None
        if isinstance(value, str) and "://" in value and not value.startswith("${"):
            masked = register(value)
            if masked != value:
                opened = open_dict(cfg) if isinstance(cfg, DictConfig) else nullcontext()
                with read_write(cfg), opened:
                    cfg[key] = masked


def pg_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is here."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return f"postgresql+psycopg2{sep}{rest}"
    return url
