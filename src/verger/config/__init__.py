"""verger.yml: finding, parsing and validating the one config file."""

from verger.config.loader import FILENAME, Loaded, find_config, load_config
from verger.config.model import Config, Environment, Health, Smoke, Watch
from verger.config.types import format_duration, parse_duration, split_listen

__all__ = [
    "FILENAME",
    "Config",
    "Environment",
    "Health",
    "Loaded",
    "Smoke",
    "Watch",
    "find_config",
    "format_duration",
    "load_config",
    "parse_duration",
    "split_listen",
]
