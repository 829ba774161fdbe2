"""Config files (``.py``/``.json``/``.yaml``) with MMEngine semantics and MMCV 1.x translation."""

from .config import Config, import_modules_from_strings
from .config_dict import ConfigDict
from .errors import ConfigKeyError, LegacyConfigError, LegacyConfigNote, LegacyConfigWarning
from .legacy import translate_legacy_config
from .options import DictAction, parse_cfg_options, parse_value

__all__ = [
    "Config",
    "ConfigDict",
    "ConfigKeyError",
    "DictAction",
    "LegacyConfigError",
    "LegacyConfigNote",
    "LegacyConfigWarning",
    "import_modules_from_strings",
    "parse_cfg_options",
    "parse_value",
    "translate_legacy_config",
]
