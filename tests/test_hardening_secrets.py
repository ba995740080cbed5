"""Issue 12, black box: credentials planted in allow-listed variables' values and in a script's arguments
never reach an artefact (trace, -wal, results file, env JSON, kept traces) or any output.

Every command runs as ``python -m twinrun ...`` in a fresh process; afterwards every byte of every file
in its folder, and its stdout and stderr, are searched for each secret.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hardening_support import NP_SCRIPT, TOY_SCRIPT, assert_clean, twinrun, write_script

pytestmark = pytest.mark.timeout(300)

SECRETS = {
    "url-password": "PW1urlSECRETvalue",
    "tf-config-password": "PW2jsonSECRETvalue",
    "xla-token": "PW3flagSECRETvalue",
    "signed-url-signature": "PW4sigSECRETdeadbeef",
    "signed-url-credential": "AKIAIOSFODNN7PW4XMPL",
    "api-key": "sk-PW5argSECRETabcdefghijklmnop",
    "password-arg": "PW6argSECRETvalue",
    "hf-token": "hf_PW7argSECRETabcdefghijklmnopqrstu",
    "bearer": "PW8bearerSECRET123",
}

# Allow-listed names (they enter fingerprints and trace headers) with secrets in their values.
PLANTED_ENV = {
    "JAX_COORDINATOR_ADDRESS": f"http://trainer:{SECRETS['url-password']}@10.0.0.1:1234",
    "TF_CONFIG": json.dumps({"cluster": {"worker": ["10.0.0.2:2222"]}, "task": {"type": "worker", "index": 0},
                             "password": SECRETS["tf-config-password"]}),
    "XLA_FLAGS": f"--xla_cpu_max_isa=AVX2 --token={SECRETS['xla-token']}",
    "OMP_SIGNED_MODEL_URL": ("https://bucket.s3.amazonaws.com/model.pt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                             f"&X-Amz-Credential={SECRETS['signed-url-credential']}%2F20260101%2Fus-east-1"
                             f"&X-Amz-Signature={SECRETS['signed-url-signature']}"),
    "MKL_DEBUG_HEADER": f"Authorization: Bearer {SECRETS['bearer']}",
}
# ... and in the script's own arguments.
SCRIPT_ARGS = ["--api-key", SECRETS["api-key"], f"--password={SECRETS['password-arg']}",
               "--hf-token", SECRETS["hf-token"], "--lr", "0.1"]


def leaks(folder: Path, *outputs: str) -> dict[str, list[str]]:
    """secret name -> where its value was found (file paths relative to ``folder``, or "output")."""
    found: dict[str, list[str]] = {}
    blobs = [(str(p.relative_to(folder)), p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()]
    blobs += [("output", o.encode()) for o in outputs]
    for name, value in SECRETS.items():
        where = [label for label, data in blobs if value.encode() in data]
        if where:
            found[name] = where
    return found


@pytest.fixture
def work(tmp_path) -> Path:
    write_script(tmp_path, "train.py", NP_SCRIPT)
    write_script(tmp_path, "toy.py", TOY_SCRIPT)
    return tmp_path


def _run(work: Path, *args) -> tuple[str, str]:
    r = twinrun(*args, cwd=work, env=PLANTED_ENV, timeout=240)
    assert_clean(r, (0, 1, 2, 3))
    return r.stdout, r.stderr


COMMANDS = {
    "run": [("run", "-o", "t.trace", "train.py", "--", *SCRIPT_ARGS),
            ("run", "--json", "-o", "t2.trace", "train.py", "--", *SCRIPT_ARGS)],
    "check": [("check", "--json", "--keep-traces", "kept", "train.py", "--", *SCRIPT_ARGS),
              ("check", "--keep-traces", "kept2", "train.py", "--", *SCRIPT_ARGS)],
    "check-against": [("run", "-q", "-o", "ref.trace", "train.py", "--", *SCRIPT_ARGS),
                      ("check", "--json", "--against", "ref.trace", "--keep-traces", "k", "train.py", "--",
                       *SCRIPT_ARGS)],
    "doctor": [("doctor", "--json", "--keep-traces", "dk", "--max-steps", "2", "--no-portability", "train.py", "--",
                *SCRIPT_ARGS)],
    "sweep": [("sweep", "-o", "r.db", "--seeds", "2", "toy.py", "--", *SCRIPT_ARGS),
              ("sweep", "--json", "-o", "r.db", "--seeds", "3", "toy.py", "--", *SCRIPT_ARGS),
              ("compare", "--json", "r.db"),
              # a resume with other arguments is refused with a message that quotes them
              ("sweep", "-o", "r.db", "--seeds", "3", "toy.py", "--", "--api-key", SECRETS["api-key"] + "x")],
    "env": [("env", "-o", "e.json"), ("env", "--json"), ("env",)],
    "diff": [("run", "-q", "-o", "a.trace", "train.py", "--", *SCRIPT_ARGS),
             ("run", "-q", "-o", "b.trace", "train.py", "--", *SCRIPT_ARGS),
             ("diff", "--json", "a.trace", "b.trace"), ("diff", "a.trace", "b.trace")],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_planted_secret_reaches_an_artefact_or_an_output(work, command):
    outputs: list[str] = []
    for args in COMMANDS[command]:
        outputs += _run(work, *args)
    found = leaks(work, *outputs)
    assert not found, f"secrets found: {found}"


def test_the_planted_values_are_really_there_to_be_found(work):
    """The test above must be able to fail: without redaction the values are in the environment the run
    sees (the script prints them here), and the search finds them."""
    write_script(work, "show.py", "import os, sys\nprint(os.environ['XLA_FLAGS'], sys.argv[1:])\n")
    r = twinrun("run", "-q", "-o", "s.trace", "show.py", "--", *SCRIPT_ARGS, cwd=work, env=PLANTED_ENV)
    assert_clean(r, (0,))
    assert set(leaks(work, r.stdout)) >= {"xla-token", "api-key", "password-arg", "hf-token"}


def test_what_is_not_secret_is_kept(work):
    _run(work, "env", "-o", "e.json")
    fp = json.loads((work / "e.json").read_text())
    assert fp["env_vars"]["XLA_FLAGS"].startswith("--xla_cpu_max_isa=AVX2 --token=")
    assert "10.0.0.1:1234" in fp["env_vars"]["JAX_COORDINATOR_ADDRESS"]
    assert json.loads(fp["env_vars"]["TF_CONFIG"])["cluster"] == {"worker": ["10.0.0.2:2222"]}
    assert SECRETS["xla-token"] not in json.dumps(fp)


def test_a_sweep_keeps_its_arguments_redacted_and_resumes_only_with_the_same_ones(work):
    import sqlite3

    def sweep(seeds: int, key: str):
        return twinrun("sweep", "-q", "-o", "r.db", "--seeds", seeds, "toy.py", "--", "--api-key", key, cwd=work)

    assert_clean(sweep(1, SECRETS["api-key"]), (0,))
    meta = dict(sqlite3.connect(work / "r.db").execute("SELECT key, value FROM meta").fetchall())
    assert json.loads(meta["args"]) == ["--api-key", "<redacted>"]
    assert len(json.loads(meta["args_sha256"])) == 64
    assert_clean(sweep(2, SECRETS["api-key"]), (0,))        # the same (real) arguments: resumed
    runs = sqlite3.connect(work / "r.db").execute("SELECT count(*) FROM runs").fetchone()[0]
    assert runs == 2
    r = sweep(3, SECRETS["api-key"] + "2")                  # redacted alike, but other arguments: refused
    assert_clean(r, (2,))
    assert "other arguments" in r.stderr and SECRETS["api-key"] not in r.stderr
