"""Redacting secrets by value as well as by name, before anything is stored or shown.

twinrun stores a run's command line and allow-listed environment variables (``OMP_*``, XLA's flags,
``TF_CONFIG``, ``JAX_COORDINATOR_ADDRESS``, ...) in traces, results files, ``env`` output and
messages. A variable's *name* can be harmless while its *value* carries a credential
(``JAX_COORDINATOR_ADDRESS=http://u:PASS@host``, XLA's flags with ``--token=...``, a ``TF_CONFIG`` with a
password, a signed URL), and a script's arguments often do (``-- --api-key sk-...``). Every value
goes through these functions first:

- :func:`redact_argv`  a command line: ``--api-key X``, ``--token=X``, ``password=X``, secret-looking
  values anywhere;
- :func:`redact_env`   ``{name: value}``: the whole value of a secret-looking name, else the secrets
  inside the value (JSON values such as ``TF_CONFIG`` are parsed and redacted key by key);
- :func:`redact_text`  free text (an error message, a stderr tail);
- :func:`redact_json`  any JSON-ready value (a trace header, a results file's meta), recursively.

What is recognised (each replaced by ``<redacted>``; the rest of the text is kept):

==========================  ================================================================
URL user-info               ``scheme://user:PASSWORD@host`` (the password), and a token-like
                            user alone (``https://ghp_...@github.com``)
signed URLs                 the value of query parameters with secret names: ``X-Amz-Signature``,
                            ``X-Amz-Credential``, ``X-Amz-Security-Token``, ``X-Goog-Signature``,
                            ``sig``, ``signature``, ``token``, ``access_token``, ``key``, ...
flags                       ``--NAME=VALUE`` and ``--NAME VALUE`` where NAME is secret-looking
key = value                 ``NAME=VALUE``, ``NAME: VALUE``, ``"NAME": "VALUE"`` likewise
bearer / basic auth         ``Bearer X``, ``Basic X`` (X token-like: digits, mixed case or ``_-.~+/=``)
token shapes                ``sk-...`` (OpenAI, Anthropic), ``ghp_``/``gho_``/``ghs_``/``ghu_``/``ghr_``,
                            ``github_pat_``, ``glpat-``, ``xox?-`` (Slack), ``AKIA``/``ASIA``... (AWS key
                            ids), ``AIza`` (Google), ``hf_`` (Hugging Face), ``npm_``,
                            ``sk_live_``/``rk_live_`` (Stripe), JWTs (``eyJ...``.``...``.``...``),
                            PEM private-key blocks
==========================  ================================================================

A name is secret-looking when one of its words (split at ``-``, ``_``, ``.``, spaces and camelCase)
is ``password``, ``passwd``, ``passphrase``, ``secret``, ``token``, ``apikey``, ``auth``,
``authorization``, ``credential(s)``, ``signature``, ``sig``, ``cookie``, ``bearer``, ``sas``, or its
last word is ``key`` (``api_key``, ``--secret-key``, ``private_key``; also ``--sort-key``: redacting a
harmless value loses a detail, missing a secret leaks it), or it is exactly ``pass``/``pwd``. Words
merely containing these (``tokenizer``, ``max_tokens``, ``xla_dump_hlo_pass_re``, ``author``) do not
count, so numerics settings (``OMP_NUM_THREADS=2``, ``--xla_cpu_max_isa=AVX2``, paths) pass
unchanged.

>>> redact_argv(["train.py", "--api-key", "sk-abcdefghijklmnopqrstuvwx", "--lr=0.1"])
['train.py', '--api-key', '<redacted>', '--lr=0.1']
>>> redact_env({"JAX_COORDINATOR_ADDRESS": "http://u:hunter2@10.0.0.1:1234", "OMP_NUM_THREADS": "2"})
{'JAX_COORDINATOR_ADDRESS': 'http://u:<redacted>@10.0.0.1:1234', 'OMP_NUM_THREADS': '2'}
>>> redact_text("fetch https://b.s3.amazonaws.com/x?X-Amz-Date=1&X-Amz-Signature=abc123 failed")
'fetch https://b.s3.amazonaws.com/x?X-Amz-Date=1&X-Amz-Signature=<redacted> failed'

Sharing a file publicly needs more than secrets removed: :func:`for_sharing` also replaces the host
name, the user's name inside paths and the home folder (see ``docs/security.md``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "REDACTED",
    "for_sharing",
    "is_secret_name",
    "redact_argv",
    "redact_env",
    "redact_json",
    "redact_text",
    "redact_value",
]

REDACTED = "<redacted>"

_SECRET_WORDS = frozenset({
    "password", "passwd", "passphrase", "secret", "secrets", "token", "apikey", "auth", "authorization",
    "credential", "credentials", "signature", "sig", "cookie", "bearer", "sas", "privatekey", "accesskey",
    "secretkey", "accesstoken", "authtoken", "refreshtoken", "idtoken", "sessiontoken", "clientsecret",
})
_SECRET_WHOLE = frozenset({"pass", "pwd", "key", "sig", "token"})
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")

# Token shapes that are secrets whatever name they carry.
_TOKEN_SHAPES = [
    r"-----BEGIN[A-Z ]{0,40}PRIVATE KEY-----.*?(?:-----END[A-Z ]{0,40}PRIVATE KEY-----|\Z)",
    r"\bsk-(?:[A-Za-z0-9]+-){0,3}[A-Za-z0-9_-]{16,}",
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bglpat-[A-Za-z0-9_-]{20,}",
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16}\b",
    r"\bAIza[0-9A-Za-z_-]{35}",
    r"\bhf_[A-Za-z0-9]{30,}",
    r"\bnpm_[A-Za-z0-9]{36}",
    r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}",
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
]
_TOKENS = re.compile("|".join(f"(?:{p})" for p in _TOKEN_SHAPES), re.DOTALL)

# scheme://user:password@host -- the password (anything up to the @ that ends the authority).
_USERINFO = re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.-]{0,20}://(?P<user>[^\s:/?#@\"']*))"
                       r"(?P<sep>:)(?P<pw>[^\s/?#@\"']*)(?=@)")
# scheme://TOKEN@host where the user alone is a long token.
_USER_TOKEN = re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.-]{0,20}://)(?P<user>[A-Za-z0-9_.~-]{20,})(?=@)")
# Name-value patterns are lookaheads: every position is tried, so a pair that does not hold a secret
# ("error: password=x") never hides the one after it. Each names its groups "name" and "val".
# ?name=value / &name=value / ;name=value in URLs (and anything query-string shaped).
_QUERY = re.compile(r"(?=[?&;](?P<name>[A-Za-z0-9_.\-]{1,64})=(?P<val>[^&#\s\"'<>]*))")
# "name": "value" (JSON-ish text that did not parse as JSON, e.g. inside a longer message).
_JSON_PAIR = re.compile(r"(?=\"(?P<name>[A-Za-z0-9_.\- ]{1,64})\"\s*:\s*"
                        r"(?P<val>\"(?:[^\"\\]|\\.)*\"|[^\s,{}\[\]\"]+))")
# --name=value and --name value (one or two dashes; in free text and within flag-list values such as XLA's).
_FLAG = re.compile(r"(?<![\w-])(?=--?(?P<name>[A-Za-z][A-Za-z0-9_.\-]{0,63})(?:=|[ \t]+(?!-))"
                   r"(?P<val>\"[^\"]*\"|'[^']*'|[^\s\"']+))")
# name=value and name: value (not after a dash: flags are handled above).
_PAIR = re.compile(r"(?<![\w\-./])(?=(?P<name>[A-Za-z_][A-Za-z0-9_.\-]{0,63})[ \t]*(?:=|:)[ \t]*"
                   r"(?P<val>\"[^\"]*\"|'[^']*'|[^\s,;&\"'<>]+))")
_AUTH = re.compile(r"(?P<pre>\b(?:[Bb]earer|[Bb]asic|BEARER|BASIC)[ \t]+)(?P<val>[A-Za-z0-9._~+/=-]{8,})")


def is_secret_name(name: str) -> bool:
    """Whether a variable, flag, key or query-parameter name looks like it holds a secret.

    >>> [is_secret_name(n) for n in ("api_key", "--hf-token", "X-Amz-Signature", "TF_CONFIG", "tokenizer")]
    [True, True, True, False, False]
    """
    stripped = name.strip().lstrip("-")
    words = [w.lower() for w in _WORD_SPLIT.split(stripped) if w]
    if not words:
        return False
    if "".join(words) in _SECRET_WHOLE or "".join(words) in _SECRET_WORDS:
        return True
    if any(w in _SECRET_WORDS for w in words):
        return True
    if words[-1] == "key":
        return True
    # camel or compact compounds: "apiKey" split above; "accesstoken" / "secretkey" as one word
    return any(w.endswith(("apikey", "secretkey", "accesskey", "privatekey", "password", "passwd", "token",
                           "secret")) and w not in ("tokens",) for w in words)


def _secret_value(val: str) -> bool:
    # "Authorization: Bearer X": the credential is X (handled by _AUTH), not the word Bearer.
    bare = val.strip("\"'")
    return bool(bare) and bare != REDACTED and bare.lower() not in ("bearer", "basic")


def redact_text(text: str) -> str:
    """``text`` with every recognised secret replaced by ``<redacted>`` (see the module's table).

    >>> redact_text("login to postgres://admin:s3cr3t@db:5432/x with password=hunter2")
    'login to postgres://admin:<redacted>@db:5432/x with password=<redacted>'
    """
    if not isinstance(text, str) or not text:
        return text
    out = _TOKENS.sub(REDACTED, text)
    out = _AUTH.sub(lambda m: m["pre"] + REDACTED if _tokenish(m["val"]) else m[0], out)
    out = _USERINFO.sub(lambda m: m["pre"] + m["sep"] + (REDACTED if m["pw"] else ""), out)
    out = _USER_TOKEN.sub(lambda m: m["pre"] + REDACTED, out)
    for pattern in (_QUERY, _JSON_PAIR, _FLAG, _PAIR):
        out = _redact_named(pattern, out)
    return out


def _tokenish(val: str) -> bool:
    """Whether a word after ``Bearer``/``Basic`` is a credential rather than prose ("Basic usage")."""
    if len(val) < 8 or val == REDACTED:
        return False
    return any(c.isdigit() or c in "_-.~+/=" for c in val) or (any(c.isupper() for c in val[1:])
                                                                and any(c.islower() for c in val))


def _redact_named(pattern: re.Pattern, text: str) -> str:
    """Replace the ``val`` of every match of ``pattern`` whose ``name`` is secret-looking."""
    spans: list[tuple[int, int, bool]] = []
    for m in pattern.finditer(text):
        val = m["val"]
        if is_secret_name(m["name"]) and _secret_value(val):
            quoted = val[:1] in "\"'" and len(val) >= 2 and val[-1] == val[0]
            spans.append((m.start("val"), m.end("val"), quoted))
    if not spans:
        return text
    out, last = [], 0
    for start, end, quoted in spans:
        if start < last:   # overlaps a value already replaced
            continue
        q = text[start] if quoted else ""
        out += [text[last:start], f"{q}{REDACTED}{q}"]
        last = end
    out.append(text[last:])
    return "".join(out)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line with the values of secret-looking flags and every secret-shaped value redacted.

    ``--name VALUE`` (the next item, unless it is itself an option), ``--name=VALUE``, ``name=VALUE``.

    >>> redact_argv(["-m", "twinrun", "run", "x.py", "--", "--token", "abc", "--password=hunter2", "-v"])
    ['-m', 'twinrun', 'run', 'x.py', '--', '--token', '<redacted>', '--password=<redacted>', '-v']
    """
    out: list[str] = []
    hide_next = False
    for item in argv:
        item = str(item)
        if hide_next:
            hide_next = False
            if not item.startswith("-") or _looks_negative_number(item):
                out.append(REDACTED)
                continue
        if item.startswith("-") and not _looks_negative_number(item):
            name, eq, value = item.partition("=")
            if is_secret_name(name):
                if eq:
                    out.append(f"{name}={REDACTED}" if value else item)
                    continue
                hide_next = True
                out.append(item)
                continue
        out.append(redact_text(item))
    return out


def _looks_negative_number(item: str) -> bool:
    try:
        float(item)
    except ValueError:
        return False
    return True


def redact_value(name: str, value: str) -> str:
    """One environment variable's value: all of it when ``name`` is secret-looking, else the secrets
    inside it (a JSON value is parsed and redacted key by key; unparsable JSON as text)."""
    if is_secret_name(name):
        return REDACTED if value else value
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    if stripped[:1] in ("{", "[") and len(stripped) <= 2**20:
        try:
            parsed = json.loads(stripped)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, (dict, list)):
            cleaned = redact_json(parsed)
            return value if cleaned == parsed else json.dumps(cleaned, separators=(",", ":"))
    return redact_text(value)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """``{name: value}`` with each value passed through :func:`redact_value`.

    >>> redact_env({"TF_CONFIG": '{"cluster": {"chief": ["h:1"]}, "password": "pw"}'})
    {'TF_CONFIG': '{"cluster":{"chief":["h:1"]},"password":"<redacted>"}'}
    """
    return {k: redact_value(k, v) if isinstance(v, str) else v for k, v in env.items()}


_MAX_DEPTH = 200


def redact_json(obj: Any, *, _depth: int = 0) -> Any:
    """A copy of a JSON-ready value with secrets redacted: values under secret-looking keys entirely,
    strings by :func:`redact_text`; a string that is itself JSON (``TF_CONFIG`` inside an ``env``
    section) key by key. Nesting deeper than 200 levels is replaced, not walked.

    >>> redact_json({"env": {"MY_FLAGS": "--token=abc --xla_cpu_max_isa=AVX2"}, "args": ["--api-key", "k"]})
    {'env': {'MY_FLAGS': '--token=<redacted> --xla_cpu_max_isa=AVX2'}, 'args': ['--api-key', '<redacted>']}
    """
    if _depth > _MAX_DEPTH:
        return REDACTED
    if isinstance(obj, str):
        return redact_value("", obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and is_secret_name(k) and v not in (None, "", [], {}) and not isinstance(v, bool):
                out[k] = REDACTED
            elif isinstance(v, str) and isinstance(k, str):
                out[k] = redact_value(k, v)
            else:
                out[k] = redact_json(v, _depth=_depth + 1)
        return out
    if isinstance(obj, (list, tuple)):
        items = list(obj)
        if all(isinstance(x, str) for x in items):
            return redact_argv(items)   # a list of strings is most often a command line
        return [redact_json(v, _depth=_depth + 1) for v in items]
    return obj


# --- sharing -------------------------------------------------------------------------------------

_HOME = re.compile(r"(?P<pre>(?:^|(?<=[\s\"'=:(\[,]))(?:/home|/Users|/var/home|[A-Za-z]:\\Users|/export/home)"
                   r"[/\\])(?P<user>[^/\\\s\"':]+)")


def for_sharing(obj: Any, *, hostnames: Iterable[str] = (), users: Iterable[str] = (),
                paths: Mapping[str, str] | None = None) -> Any:
    """A copy of a JSON-ready value fit to attach to a public issue: secrets redacted
    (:func:`redact_json`), each of ``paths`` (``{"/work/alice-proj": "<cwd>"}``) replaced by its
    placeholder, the given host names replaced by ``<host>``, user names inside home paths
    (``/home/NAME``, ``/Users/NAME``, ``C:\\Users\\NAME``) and the given ``users`` replaced by ``<user>``
    (in values; keys keep their names, so the structure still reads). Numbers, versions, CPU flags
    and the rest of each path are kept, so the copy still explains a divergence.

    >>> for_sharing({"cwd": "/home/alice/proj", "host": {"hostname": "gpu7"}}, hostnames=["gpu7"])
    {'cwd': '/home/<user>/proj', 'host': {'hostname': '<host>'}}
    """
    hosts = sorted({h for h in hostnames if h and len(h) >= 2}, key=len, reverse=True)
    names = sorted({u for u in users if u and len(u) >= 2}, key=len, reverse=True)
    host_re = re.compile(r"(?<![A-Za-z0-9_.-])(?:" + "|".join(map(re.escape, hosts)) + r")(?![A-Za-z0-9_-])") \
        if hosts else None
    user_re = re.compile(r"(?<![A-Za-z0-9_])(?:" + "|".join(map(re.escape, names)) + r")(?![A-Za-z0-9_])") \
        if names else None
    prefixes = sorted(((p.rstrip("/\\"), v) for p, v in (paths or {}).items() if len(p.rstrip("/\\")) >= 2),
                      key=lambda pv: len(pv[0]), reverse=True)
    path_re = re.compile("|".join(re.escape(p) + r"(?![^/\\\s\"':,;)\]])" for p, _ in prefixes)) if prefixes else None
    placeholder = dict(prefixes)

    def scrub_key(s: str) -> str:
        s = _HOME.sub(lambda m: m["pre"] + "<user>", s)
        return host_re.sub("<host>", s) if host_re is not None else s

    def scrub(s: str) -> str:
        if path_re is not None:   # a whole path, or the start of a longer one: never a name that merely begins so
            s = path_re.sub(lambda m: placeholder[m[0]], s)
        s = _HOME.sub(lambda m: m["pre"] + "<user>", s)
        if host_re is not None:
            s = host_re.sub("<host>", s)
        if user_re is not None:
            s = user_re.sub("<user>", s)
        return s

    def walk(x: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            return REDACTED
        if isinstance(x, str):
            return scrub(x)
        if isinstance(x, Mapping):
            return {scrub_key(k) if isinstance(k, str) else k: walk(v, depth + 1) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, depth + 1) for v in x]
        return x

    return walk(redact_json(obj), 0)
