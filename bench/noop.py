"""The no-op job bare RQ runs in the baseline of bench.e2e."""


def noop() -> None:
    return None
