"""``seqkd-path``: print the plugin directory, for ``--user-dir $(seqkd-path)``."""

from pathlib import Path


def plugin_dir() -> str:
    return str(Path(__file__).resolve().parent.parent)


def main() -> int:
    print(plugin_dir())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
