from .isaid import ISAIDConversionError, convert_isaid, sliding_windows  # noqa: F401
