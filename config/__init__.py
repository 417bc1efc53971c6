"""Settings for every shelfstream process, and the processor core's configs derived from them."""

from config.core import core_config
from config.settings import Settings, SettingsFault, load_settings

__all__ = ["Settings", "SettingsFault", "core_config", "load_settings"]
