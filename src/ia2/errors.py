"""User-facing errors: the CLI prints `ia2: error: <message>` on one line and exits 2."""


class IA2Error(Exception):
    """Bad input or an unusable environment; the message is shown to the user as is."""


class DataError(IA2Error):
    """A data file is malformed; the message names the file and, where it applies, the row."""

    def __init__(self, path, message: str, row: int | None = None):
        where = f"{path}" if row is None else f"{path}, row {row}"
        super().__init__(f"{where}: {message}")
        self.path, self.row = path, row
