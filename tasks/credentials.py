"""Credentials never travel as job parameters: find them in storage options and say where they go.

A job's storage options end up in Prefect's database (the flow run's parameters), the UI and any
deployment, so key/secret/token-like options are refused at the edge; s3fs, gcsfs and adlfs
read their credentials from the environment and the cloud's credential chain instead.
"""

from __future__ import annotations

from typing import Any

# fsspec option names (any nesting level, e.g. client_kwargs) that carry a credential: s3fs
# (key, secret, token), botocore (aws_*), adlfs (account_key, sas_token, connection_string,
# client_secret), sftp/ftp/smb (password), gcsfs (token: a dict or a key file's contents).
CREDENTIAL_KEYS = frozenset({
    "key", "secret", "token", "session_token", "password", "passwd",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
    "access_key", "secret_key", "account_key", "sas_token", "connection_string", "client_secret",
})
# gcsfs's `token` may also name a credential mode, which is no secret.
_TOKEN_MODES = frozenset({"anon", "google_default", "cloud", "browser"})

CREDENTIALS_HINT = (
    "credentials are never job parameters (Prefect records those in its database and UI): "
    "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) or AWS_PROFILE in the "
    "environment, or use an instance/pod role, and on a Ray cluster give them to the nodes "
    "(docs/security.md)")


def credential_options(options: Any, where: str = "") -> list[str]:
    """Dotted names of the credential-carrying entries in ``options`` (nested dicts included)."""
    found: list[str] = []
    if not isinstance(options, dict):
        return found
    for name, value in options.items():
        path = f"{where}.{name}" if where else str(name)
        lowered = str(name).lower()
        mode = lowered == "token" and isinstance(value, str) and value in _TOKEN_MODES
        if lowered in CREDENTIAL_KEYS and value not in (None, "") and not mode:
            found.append(path)
        found.extend(credential_options(value, path))
    return found


def refuse_credentials(options: Any) -> None:
    """Raise ValueError naming (never showing) the credentials in ``options``."""
    found = credential_options(options)
    if found:
        raise ValueError(f"holds credentials ({', '.join(found)}), but {CREDENTIALS_HINT}")


def flag_options(argv: list[str]) -> dict[str, str]:
    """The ``--storage-option KEY=VALUE`` pairs of a command line (values left as text), and
    the entries of `restora train`'s ``--set storage_options=JSON``."""
    import json

    options: dict[str, str] = {}
    for i, arg in enumerate(argv):
        setting = argv[i + 1] if arg == "--set" and i + 1 < len(argv) else ""
        if setting.startswith("storage_options="):
            try:
                given = json.loads(setting.split("=", 1)[1])
            except json.JSONDecodeError:
                given = {}
            options.update({k: json.dumps(v) for k, v in given.items()}
                           if isinstance(given, dict) else {})
            continue
        if arg.startswith("--storage-option="):
            item = arg.split("=", 1)[1]
        elif arg == "--storage-option" and i + 1 < len(argv):
            item = argv[i + 1]
        else:
            continue
        key, _, value = item.partition("=")
        options[key.strip()] = value
    return options


def main(argv: list[str]) -> int:
    """Refuse restore or train flags that carry credentials before a job (and its command) is
    recorded."""
    import json
    import sys

    options: dict[str, object] = {}
    for key, value in flag_options(argv).items():
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    try:
        refuse_credentials(options)
    except ValueError as exc:
        print(f"restora: error: --storage-option {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
