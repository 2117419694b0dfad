"""Validation bookkeeping: every record is kept or reported (file, index, line, field, reason); read == kept + rejected."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from labkit.errors import LabkitError


@dataclass
class RecordError:
    """One rejected record (or a file-level problem when `index` is None)."""

    file: str
    index: int | None
    line: int | None
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = self.file
        if self.index is not None:
            where += f" record {self.index}"
        if self.line is not None:
            where += f" (line {self.line})"
        if self.field:
            where += f" field {self.field!r}"
        return f"{where}: {self.reason}"


@dataclass
class DatasetCounts:
    """Per-dataset counts, for the summary table."""

    dataset: str
    file: str
    formatting: str
    read: int = 0
    kept: int = 0
    rejected: int = 0
    duplicates: int = 0


@dataclass
class ValidationReport:
    """What happened to every record. `unusable` is set when a file (or the registry) cannot be read at all."""

    read: int = 0
    kept: int = 0
    rejected: int = 0
    duplicates: int = 0
    errors: list[RecordError] = field(default_factory=list)
    unusable: bool = False
    datasets: list[DatasetCounts] = field(default_factory=list)
    duplicate_records: list[dict] = field(default_factory=list)  # {"file", "index", "first_index"}
    mix: list[dict] = field(default_factory=list)  # filled by labkit.data.mixing

    # -- recording ---------------------------------------------------------------------------------------
    def reject(self, file: str, index: int | None, line: int | None, fld: str | None, reason: str) -> None:
        """A record was read and is not kept."""
        self.errors.append(RecordError(str(file), index, line, fld, reason))
        self.rejected += 1
        if self.datasets:
            self.datasets[-1].rejected += 1

    def fatal(self, file: str, line: int | None, fld: str | None, reason: str, index: int | None = None) -> None:
        """The file cannot be used (missing, not JSON, wrong top-level type, ...); no record count changes."""
        self.errors.append(RecordError(str(file), index, line, fld, reason))
        self.unusable = True

    def merge(self, other: "ValidationReport") -> None:
        self.read += other.read
        self.kept += other.kept
        self.rejected += other.rejected
        self.duplicates += other.duplicates
        self.errors += other.errors
        self.unusable = self.unusable or other.unusable
        self.datasets += other.datasets
        self.duplicate_records += other.duplicate_records

    # -- views ---------------------------------------------------------------------------------------------
    @property
    def consistent(self) -> bool:
        return self.read == self.kept + self.rejected

    def to_dict(self) -> dict:
        """The `labkit data check --json` object: read, kept, rejected, duplicates, errors."""
        return {
            "read": self.read,
            "kept": self.kept,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "errors": [asdict(e) for e in self.errors],
        }

    def to_frame(self):
        """The problems as a table: file, index, line, field, reason (empty table when all is well)."""
        import pandas as pd

        cols = ["file", "index", "line", "field", "reason"]
        return pd.DataFrame([asdict(e) for e in self.errors], columns=cols)

    def summary_frame(self):
        """Per-dataset counts: dataset, file, formatting, read, kept, rejected, duplicates."""
        import pandas as pd

        return pd.DataFrame([asdict(d) for d in self.datasets],
                            columns=["dataset", "file", "formatting", "read", "kept", "rejected", "duplicates"])

    def summary(self) -> str:
        s = f"read {self.read}, kept {self.kept}, rejected {self.rejected}, duplicates {self.duplicates}"
        return s + (" (unusable input)" if self.unusable else "")

    def raise_if_failed(self, strict: bool = True, limit: int = 20) -> None:
        """Strict: any rejected record or unusable file is an error listing the problems. Lenient: only unusable."""
        if not (self.unusable or (strict and self.rejected)):
            return
        lines = [str(e) for e in self.errors[:limit]]
        if len(self.errors) > limit:
            lines.append(f"... and {len(self.errors) - limit} more")
        head = self.summary()
        if not self.unusable:
            head += "; fix the records or load with strict=False (--lenient) to drop them"
        raise LabkitError(head + "\n  " + "\n  ".join(lines), exit_code=2 if self.unusable else 1)
