"""API keys for operators: the digest to configure for a key, or a new key with its entry.

    python -m orchestrator.keys digest [--tenant T] [--scope S ...]    # the key on stdin
    python -m orchestrator.keys generate [--tenant T] [--scope S ...]

``digest`` reads the key from standard input (a terminal prompts without echo), never from the
command line, where ``ps`` and the shell history would keep it; it prints the sha256 digest and
a ready-to-paste entry for API_KEYS_FILE (YAML) and API_KEYS_JSON. ``generate`` makes a new
random key, prints it once for the client's secret store, then the same. The server only ever
holds digests.
"""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import sys
from typing import TextIO

import yaml
from pydantic import ValidationError

from orchestrator.principals import (
    DEFAULT_TENANT,
    PrincipalSpec,
    Scope,
    describe_errors,
    digest_of,
    key_id_for_digest,
)

MIN_KEY_LENGTH = 8
"""The shortest key the API accepts (API_KEY refuses shorter ones too)."""
GENERATED_KEY_BYTES = 32
"""Randomness of a generated key (bytes): 256 bits, far beyond guessing."""


def read_key(stdin: TextIO) -> str:
    """The key from ``stdin``: prompted without echo on a terminal, else its first line."""
    if stdin.isatty():
        return getpass.getpass("API key (not echoed): ")
    return stdin.readline().strip()


def entry(digest: str, tenant: str, scopes: list[str], name: str | None) -> dict:
    """One principal entry, validated as the API will validate it at start."""
    spec = PrincipalSpec(sha256=digest, tenant=tenant, scopes=tuple(scopes), name=name)
    return spec.model_dump(mode="json", exclude_none=True)


def describe(digest: str, principal: dict, out: TextIO) -> None:
    print(f"sha256: {digest}", file=out)
    print(f"key id: {key_id_for_digest(digest)} (what audits and logs show)", file=out)
    print("\nAPI_KEYS_FILE entry (YAML):", file=out)
    print(yaml.safe_dump([principal], sort_keys=False).rstrip(), file=out)
    print("\nAPI_KEYS_JSON entry:", file=out)
    print(json.dumps(principal), file=out)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m orchestrator.keys", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    for name, text in (
        ("digest", "print the digest and entry of a key read from stdin"),
        ("generate", "make a new random key; print it once, with its digest and entry"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--tenant", default=DEFAULT_TENANT, help="the clinic or app (default: %(default)s)")
        command.add_argument(
            "--scope",
            dest="scopes",
            action="append",
            choices=[scope.value for scope in Scope],
            help="repeat for several (default: submit)",
        )
        command.add_argument("--name", help="a label for people, e.g. 'clinic A intake app'")
    return top


def main(argv: list[str] | None = None, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    args, extra = parser().parse_known_args(argv)
    if extra:  # most likely a key: never repeat it (argparse's own error would print it)
        print("keys: unexpected arguments; a key is read from stdin, never from the command line", file=sys.stderr)
        return 2
    scopes = args.scopes or [Scope.SUBMIT.value]
    if args.command == "generate":
        key = secrets.token_urlsafe(GENERATED_KEY_BYTES)
        print(f"key: {key}\n(shown once: give it to the client, keep only the digest below)\n", file=out)
    else:
        key = read_key(stdin)
        if len(key) < MIN_KEY_LENGTH:
            print(f"keys: a key must be at least {MIN_KEY_LENGTH} characters long", file=sys.stderr)
            return 2
    digest = digest_of(key)
    try:
        principal = entry(digest, args.tenant, scopes, args.name)
    except ValidationError as exc:  # a tenant or name the API would refuse at start
        print(f"keys: {describe_errors(exc)}", file=sys.stderr)
        return 2
    describe(digest, principal, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
