"""Reading a YAML file someone handed us: every way it can be wrong is one ConfigError line."""

from __future__ import annotations

from pathlib import Path

import yaml
from edgefleet.shared.errors import ConfigError

MAX_BYTES = 4 * 1024 * 1024  # bytes: configs and specs are small; a log or a model is a mistake


def read_yaml(path: str | Path, max_bytes: int = MAX_BYTES) -> object:
    """The parsed document, or :class:`ConfigError` naming the file and what is wrong."""
    p = Path(path)
    try:
        if p.is_dir():
            raise ConfigError(f"{p}: is a folder, not a file")
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise ConfigError(f"{p}: larger than {max_bytes} bytes; not a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}): not a YAML file") from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise ConfigError(f"{p}: not valid YAML: {first}") from e
    except RecursionError as e:  # deeply nested flow collections
        raise ConfigError(f"{p}: not valid YAML: nested too deeply") from e
