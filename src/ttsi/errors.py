"""User-facing errors: each one is a single clear sentence naming the problem (the CLI exits 2 on them)."""


class TTSIError(Exception):
    """Bad input or an unusable resource; the message alone tells the user what to fix."""


class ConfigError(TTSIError):
    """A setting is out of range or inconsistent with the chosen method."""


class TaskError(TTSIError):
    """A task file or task object is malformed, or lacks what the method needs."""


class ContextLengthError(TaskError):
    """A prompt (with what has to follow it) does not fit in the model's context window."""


class ModelLoadError(TTSIError):
    """A model or tokenizer could not be loaded from the given id or directory."""


class TeacherError(TTSIError):
    """The TT-D teacher endpoint is unreachable, refused the request, or returned nothing usable."""


class FileError(TTSIError):
    """A file or directory could not be read or written: missing, a directory, a device, not UTF-8, disk full."""
