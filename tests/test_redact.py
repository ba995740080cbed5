"""twinrun.redact: secrets are redacted by value as well as by name; numerics settings pass unchanged."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from twinrun.redact import (
    REDACTED,
    for_sharing,
    is_secret_name,
    redact_argv,
    redact_env,
    redact_json,
    redact_text,
    redact_value,
)

# 50 examples per property keeps this file inside the CI budget; TWINRUN_HYPOTHESIS_EXAMPLES=1000 searches deeper.
EXAMPLES = int(os.environ.get("TWINRUN_HYPOTHESIS_EXAMPLES", "50"))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

# Secrets as they appear in the wild: URL-safe characters, long enough to matter.
secret = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._~-", min_size=8,
                 max_size=40).filter(lambda s: s not in REDACTED and not s.startswith("-") and s.strip("._~-"))
host = st.sampled_from(["10.0.0.1:1234", "coordinator.internal:8476", "h", "db.example.com"])
user = st.sampled_from(["u", "admin", "alice", "svc-train"])
secret_flag = st.sampled_from(["--api-key", "--api_key", "--token", "--hf-token", "--password", "--passwd",
                               "--secret", "--client-secret", "--aws-secret-access-key", "--auth", "--wandb-key",
                               "--access-token", "--apiKey", "--private-key", "--credentials", "-token"])
secret_key = st.sampled_from(["password", "passwd", "secret", "token", "api_key", "apiKey", "access_token",
                              "client_secret", "private_key", "credentials", "auth", "authorization",
                              "sessionToken", "SECRET_KEY", "hf_token"])
query_key = st.sampled_from(["X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "X-Goog-Signature",
                             "X-Goog-Credential", "sig", "signature", "token", "access_token", "key", "api_key"])
context = st.sampled_from(["{}", "error: {} failed", "[{}]", "x = {}; y", "{}\nnext line", "  {}  "])


def _absent(s: str, out: str) -> bool:
    return s not in out


# --- no false negatives on the planted shapes ------------------------------------------------------------

@FAST
@given(secret, user, host, st.sampled_from(["http", "https", "grpc", "postgres", "redis", "s3"]), context)
def test_url_user_info_password(pw, u, h, scheme, ctx):
    text = ctx.format(f"{scheme}://{u}:{pw}@{h}/path")
    assume(pw not in ctx and pw not in h and pw not in scheme and pw not in u)
    out = redact_text(text)
    assert _absent(pw, out) and f"{scheme}://{u}:{REDACTED}@{h}" in out
    assert _absent(pw, redact_value("JAX_COORDINATOR_ADDRESS", text))


@FAST
@given(secret, query_key, context)
def test_signed_url_query_values(sig, key, ctx):
    url = f"https://bucket.s3.amazonaws.com/model.pt?X-Amz-Algorithm=AWS4-HMAC-SHA256&{key}={sig}&X-Amz-Expires=3600"
    assume(sig not in url.replace(sig, "") and sig not in ctx)
    out = redact_text(ctx.format(url))
    assert _absent(sig, out)
    assert "X-Amz-Expires=3600" in out and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in out


@FAST
@given(secret, secret_flag, st.lists(st.sampled_from(["--lr", "0.1", "--epochs", "3", "-v", "data/"]), max_size=4),
       st.booleans())
def test_argv_secret_flags(value, flag, rest, joined):
    argv = ["train.py", *rest, *([f"{flag}={value}"] if joined else [flag, value]), *rest]
    assume(all(value not in r for r in rest))
    out = redact_argv(argv)
    assert all(value not in item for item in out)
    assert len(out) == len(argv) and out[0] == "train.py"
    assert [a for a in out if a in rest] == [a for a in argv if a in rest]


@FAST
@given(secret, secret_flag, st.sampled_from([" ", "="]))
def test_flags_inside_a_value(value, flag, sep):
    flags = f"--xla_cpu_max_isa=AVX2 {flag}{sep}{value} --xla_force_host_platform_device_count=8"
    out = redact_value("XLA_FLAGS", flags)
    assert _absent(value, out)
    assert "--xla_cpu_max_isa=AVX2" in out and "--xla_force_host_platform_device_count=8" in out


@FAST
@given(secret, secret_key, st.sampled_from(["=", ": ", " = ", "="]), context)
def test_key_value_pairs_in_text(value, key, sep, ctx):
    assume(value not in ctx and value not in key)
    out = redact_text(ctx.format(f"{key}{sep}{value}"))
    assert _absent(value, out)


@FAST
@given(secret, secret_key, st.integers(0, 4))
def test_json_values_of_secret_keys_at_any_depth(value, key, depth):
    doc: dict = {key: value, "cluster": {"worker": ["h1:2222", "h2:2222"]}, "task": {"type": "worker", "index": 0}}
    for _ in range(depth):
        doc = {"nested": doc, "other": [1, 2.5, None, True]}
    assert _absent(value, json.dumps(redact_json(doc)))
    assert _absent(value, redact_value("TF_CONFIG", json.dumps(doc)))
    assert _absent(value, redact_text(json.dumps(doc)))   # the same, as text that is not parsed


TOKENS = {
    "openai": st.from_regex(r"sk-[A-Za-z0-9]{32,48}", fullmatch=True),
    "openai-project": st.from_regex(r"sk-proj-[A-Za-z0-9_-]{40,60}", fullmatch=True),
    "anthropic": st.from_regex(r"sk-ant-api03-[A-Za-z0-9_-]{40,60}", fullmatch=True),
    "github": st.from_regex(r"gh[pousr]_[A-Za-z0-9]{36}", fullmatch=True),
    "github-pat": st.from_regex(r"github_pat_[A-Za-z0-9_]{60,82}", fullmatch=True),
    "aws-key-id": st.from_regex(r"(AKIA|ASIA)[A-Z0-9]{16}", fullmatch=True),
    "google": st.from_regex(r"AIza[0-9A-Za-z_-]{35}", fullmatch=True),
    "huggingface": st.from_regex(r"hf_[A-Za-z0-9]{34}", fullmatch=True),
    "slack": st.from_regex(r"xoxb-[0-9]{10,12}-[A-Za-z0-9]{20,24}", fullmatch=True),
    "jwt": st.from_regex(r"eyJ[A-Za-z0-9_-]{10,30}\.eyJ[A-Za-z0-9_-]{10,60}\.[A-Za-z0-9_-]{20,43}", fullmatch=True),
    "gitlab": st.from_regex(r"glpat-[A-Za-z0-9_-]{20}", fullmatch=True),
}


@pytest.mark.parametrize("kind", sorted(TOKENS))
def test_token_shapes_with_no_name_around_them(kind):
    @FAST
    @given(TOKENS[kind], context)
    def check(token, ctx):
        assert _absent(token, redact_text(ctx.format(token)))
        assert _absent(token, redact_text(f"Authorization: Bearer {token}"))
        assert all(token not in a for a in redact_argv(["train.py", token, f"--model={token}"]))
        assert _absent(token, redact_value("OMP_SOMETHING", token))

    check()


def test_bearer_and_basic_credentials_and_private_keys():
    assert redact_text("Authorization: Bearer abc123XYZ.def") == f"Authorization: Bearer {REDACTED}"
    assert redact_text("Authorization: Basic dXNlcjpwYXNzd29yZA==") == f"Authorization: Basic {REDACTED}"
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY-----"
    assert redact_text(f"key:\n{pem}\ndone") == f"key:\n{REDACTED}\ndone"


# --- few false positives on real numerics settings ------------------------------------------------------

REAL_ENV = {
    "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "4", "OMP_PROC_BIND": "close",
    "OMP_PLACES": "{0:4}", "KMP_AFFINITY": "granularity=fine,compact,1,0", "KMP_BLOCKTIME": "0",
    "XLA_FLAGS": "--xla_cpu_max_isa=AVX2 --xla_force_host_platform_device_count=8 --xla_dump_to=/tmp/xla "
                 "--xla_cpu_multi_thread_eigen=false --xla_dump_hlo_pass_re=.* intra_op_parallelism_threads=1",
    "TF_XLA_FLAGS": "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit", "TF_ENABLE_ONEDNN_OPTS": "0",
    "TF_CPP_MIN_LOG_LEVEL": "2", "TF_DETERMINISTIC_OPS": "1", "TF_NUM_INTRAOP_THREADS": "1",
    "TF_CONFIG": '{"cluster": {"chief": ["host0:2222"], "worker": ["host1:2222", "host2:2222"]}, '
                 '"task": {"type": "worker", "index": 1}}',
    "JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "True", "JAX_DEFAULT_MATMUL_PRECISION": "highest",
    "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_COMPILATION_CACHE_DIR": "/home/alice/.cache/jax",
    "JAX_TRACEBACK_FILTERING": "off", "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "NVIDIA_TF32_OVERRIDE": "0",
    "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_VERBOSE": "0", "MKL_CBWR": "COMPATIBLE",
    "MKL_DEBUG_CPU_TYPE": "5", "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-AVX2_Usable:glibc.malloc.arena_max=2",
    "PYTHONHASHSEED": "0", "NPY_PROMOTION_STATE": "weak", "OPENBLAS_CORETYPE": "Haswell",
    "TWINRUN_SEED": "0", "TWINRUN_SEED_INIT": "7", "OMP_TOOL_LIBRARIES": "/opt/tools/libomptool.so",
    "TF_DATA_CACHE": "gs://bucket/cache/tokenizer", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def test_real_numerics_variables_pass_unchanged():
    assert redact_env(REAL_ENV) == REAL_ENV


numeric_value = st.one_of(st.integers(-10**6, 10**6).map(str),
                          st.floats(allow_nan=False, allow_infinity=False).map(str),
                          st.from_regex(r"(/[a-z_.]{1,12}){1,5}", fullmatch=True),
                          st.from_regex(r"(--xla_[a-z_]{3,30}=(true|false|[0-9]{1,4}|AVX2|AVX512) ?){1,4}",
                                        fullmatch=True),
                          st.sampled_from(["AVX2", "SSE41", "default", "COMPATIBLE", "close", "spread", "true"]))
numeric_name = st.sampled_from(["OMP_NUM_THREADS", "XLA_FLAGS", "MKL_CBWR", "TF_NUM_INTEROP_THREADS", "KMP_AFFINITY",
                                "JAX_PLATFORMS", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED"])


@FAST
@given(st.dictionaries(numeric_name, numeric_value, max_size=6))
def test_numerics_values_never_redacted(env):
    assert redact_env(env) == env


@pytest.mark.parametrize("argv", [
    ["train.py", "--lr", "0.1", "--epochs", "3", "--tokenizer", "bert-base", "--max-tokens", "512"],
    ["-m", "twinrun", "run", "-o", "/home/alice/run.trace", "--max-steps", "20", "train.py", "--", "--seed", "-1"],
    ["train.py", "--data", "s3://bucket/digits/train", "--author", "alice", "--keyword", "cnn"],
])
def test_ordinary_command_lines_pass_unchanged(argv):
    assert redact_argv(argv) == argv


@pytest.mark.parametrize("name", ["tokenizer", "max_tokens", "xla_dump_hlo_pass_re", "author", "OMP_NUM_THREADS",
                                  "TF_CONFIG", "keyword", "monkey_patch", "passes", "num_key_value_heads"])
def test_names_that_merely_contain_a_word_are_not_secret(name):
    assert not is_secret_name(name)


@pytest.mark.parametrize("name", ["api_key", "apiKey", "API-KEY", "--hf-token", "X-Amz-Signature", "sig",
                                  "client_secret", "aws_secret_access_key", "DB_PASSWORD", "accessToken",
                                  "private_key", "pass", "Authorization", "credentials"])
def test_secret_names(name):
    assert is_secret_name(name)


# --- properties --------------------------------------------------------------------------------------------

@FAST
@given(st.text(max_size=300))
def test_redact_text_is_idempotent_and_total(text):
    once = redact_text(text)
    assert redact_text(once) == once


@FAST
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children,
                                                                                       max_size=4), max_leaves=30))
def test_redact_json_keeps_the_shape_of_any_document(doc):
    out = redact_json(doc)
    assert json.loads(json.dumps(out)) == out
    assert type(out) is type(doc)
    if isinstance(doc, dict):
        assert list(out) == list(doc)


def test_redact_json_survives_deep_nesting():
    doc: list = []
    for _ in range(5000):
        doc = [doc]
    out = redact_json(doc)
    depth = 0
    while isinstance(out, list) and out:
        out, depth = out[0], depth + 1
    assert depth <= 202


# --- for sharing --------------------------------------------------------------------------------------------

def test_for_sharing_hides_host_user_and_secrets_but_keeps_the_numerics():
    header = {
        "command": ["/home/alice/venv/bin/python", "-m", "twinrun", "run", "train.py", "--", "--token", "abc12345"],
        "cwd": "/home/alice/work/cnn",
        "env": {"host": {"hostname": "gpu-node-7"}, "env_vars": {"OMP_NUM_THREADS": "2"},
                "cpu": {"flags": ["avx2", "fma"]}, "python": {"executable": "/Users/alice/.venv/bin/python"}},
        "note": "ran on gpu-node-7 by alice",
    }
    out = for_sharing(header, hostnames=["gpu-node-7"], users=["alice"])
    text = json.dumps(out)
    for leak in ("alice", "gpu-node-7", "abc12345"):
        assert leak not in text
    assert out["cwd"] == "/home/<user>/work/cnn"
    assert out["env"]["env_vars"] == {"OMP_NUM_THREADS": "2"}
    assert out["env"]["cpu"]["flags"] == ["avx2", "fma"]
    assert out["env"]["host"]["hostname"] == "<host>"


def test_for_sharing_replaces_given_paths_whole_and_keeps_keys():
    out = for_sharing({"cwd": "/tmp/x/proj", "script": "/tmp/x/proj/train.py", "other": "/tmp/x/projection",
                       "command": ["python", "/tmp/x/proj/a.py", "--data=/home/bob/d"], "seeds": {"root": 1},
                       "note": "root ran it"}, paths={"/tmp/x/proj": "<cwd>"}, users=["root"])
    assert out["cwd"] == "<cwd>" and out["script"] == "<cwd>/train.py"
    assert out["other"] == "/tmp/x/projection"            # a longer name that merely starts the same
    assert out["command"] == ["python", "<cwd>/a.py", "--data=/home/<user>/d"]
    assert out["seeds"] == {"root": 1}                     # keys keep their names
    assert out["note"] == "<user> ran it"
