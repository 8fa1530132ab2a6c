"""Errors every render backend shares (a module of its own, so backends import it without
importing each other)."""


class RenderError(Exception):
    """A render that this prompt can never produce (bad workflow, validation): not retried."""


class ModelFilesMissing(RenderError):
    """A preset's model files are on no server: what is missing where, and where to get it."""

    def __init__(self, preset: str, missing: dict) -> None:
        self.preset = preset
        self.missing = missing  # server URL -> the preset's files it lacks (comfy.presets.ModelFile)
        lines = []
        for server, files in missing.items():
            names = ", ".join(f"models/{f.path}" + (f" (from {f.url})" if f.url else "") for f in files)
            lines.append(f"{server} lacks {names}")
        super().__init__(f"model missing: preset {preset} cannot run: {'; '.join(lines)}. "
                         "Put the files there (or name yours in TOWER_COMFY_MODELS); `tower models` checks")
