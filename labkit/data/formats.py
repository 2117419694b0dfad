"""Readers: JSON arrays and JSONL (streamed), alpaca and sharegpt records -> normalised examples, with validation."""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labkit.config import closest
from labkit.data.validation import DatasetCounts, ValidationReport

CHUNK = 1 << 20  # bytes read at a time; a JSON array is parsed record by record, never held twice

# system, history and tools are read by their usual names unless a registry maps them elsewhere: a record's
# system prompt or history is never dropped silently, and a record with tools is refused, not trimmed
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": "history",
                  "system": "system", "tools": "tools"}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system", "tools": "tools"}
SHAREGPT_TAGS = {
    "role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
    "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system",
}
OPENAI_TAGS = {**SHAREGPT_TAGS, "role_tag": "role", "content_tag": "content", "user_tag": "user",
               "assistant_tag": "assistant"}
FORMATTINGS = ("alpaca", "sharegpt")
TASK_KEY = "task"  # labkit extra: an alpaca/sharegpt record may name its task (kept as example["task"])


def _json_msg(err: json.JSONDecodeError) -> str:
    """The decoder's message as a whole sentence ("Unterminated string starting at" names no place by itself)."""
    msg = err.msg
    if msg.endswith(" at"):
        msg += " this position"
    if msg.startswith("Unterminated string"):
        msg += " (the text ends inside a string: cut off?)"
    return msg


class _Fatal(Exception):
    """The file cannot be used. `index`: the record that was cut or broken (it began), else None."""

    def __init__(self, reason: str, line: int | None = None, index: int | None = None):
        super().__init__(reason)
        self.reason, self.line, self.index = reason, line, index


def _ends_after(index: int) -> str:
    where = f"after record {index - 1}" if index else "before any record"
    return f"file ends inside the array ({where}); missing ']' (cut off?)"


# ---------------------------------------------------------------------------------------------- raw records
def iter_json_records(path: str | os.PathLike) -> Iterator[tuple[int, int | None, Any, str | None]]:
    """Yield (index, line, record, problem) from a JSON array or JSONL file, streamed.

    `problem` is a reason string for a record that could not be parsed (JSONL line), else None.
    Raises _Fatal when the file as a whole cannot be used.
    """
    path = Path(path)
    if not path.exists():
        raise _Fatal("file not found")
    if path.is_dir():
        raise _Fatal("is a folder, not a file")
    with open(path, "rb") as f:
        head = f.read(4096)
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise _Fatal("file is UTF-16; save it as UTF-8")
        start = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
        stripped = head[start:].lstrip()
        while not stripped:  # leading whitespace longer than the probe
            more = f.read(CHUNK)
            if not more:
                break
            stripped = more.lstrip()
        if not stripped:
            raise _Fatal("file is empty")
        first = stripped[:1]
        f.seek(start)
        if first == b"[":
            yield from _iter_array(f)
            return
        if first == b"{" and (path.suffix.lower() == ".jsonl" or _first_line_is_json(stripped)):
            yield from _iter_jsonl(f)
            return
        yield from _iter_document(f, path)


def _first_line_is_json(data: bytes) -> bool:
    line = data.split(b"\n", 1)[0]
    try:
        return isinstance(json.loads(line.decode("utf-8", "replace")), dict)
    except ValueError:
        return False


def _iter_document(f, path: Path):
    """A file that is neither an array nor JSONL: say what it is."""
    raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise _Fatal(f"not valid UTF-8 (byte {err.start}); save the file as UTF-8", line=line) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise _Fatal(f"not JSON: {_json_msg(err)} (line {err.lineno} column {err.colno})", line=err.lineno) from None
    if isinstance(obj, dict):
        lists = [k for k, v in obj.items() if isinstance(v, list)]
        hint = f" (the records may be the list under key {lists[0]!r})" if lists else ""
        raise _Fatal(f"top-level JSON is an object; expected an array of records or JSONL{hint}", line=1)
    raise _Fatal(f"top-level JSON is a {type(obj).__name__}; expected an array of records or JSONL", line=1)


def _iter_jsonl(f):
    index, good = 0, 0
    for lineno, raw in enumerate(f, 1):
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield index, lineno, None, f"not valid UTF-8 (byte {err.start} of the line)"
            index += 1
            continue
        try:
            obj = json.loads(text.rstrip("\r\n"))  # the line break is not part of the record (columns stay right)
        except json.JSONDecodeError as err:
            yield index, lineno, None, f"invalid JSON at line {lineno} column {err.colno}: {_json_msg(err)}"
            index += 1
            continue
        good += 1
        yield index, lineno, obj, None
        index += 1
    if index and not good:
        raise _Fatal("no line of the file is valid JSON")


class _TextStream:
    """Incrementally decoded UTF-8 text with line tracking, for the streaming array parser."""

    def __init__(self, f):
        self.f = f
        self.dec = codecs.getincrementaldecoder("utf-8")("strict")
        self.buf = ""
        self.eof = False
        self.base_line = 1  # line number of buf[0]
        self._lpos, self._lline = 0, 1
        self.bytes_read = 0
        self.newlines_bytes = 0

    def more(self) -> bool:
        if self.eof:
            return False
        chunk = self.f.read(CHUNK)
        try:
            text = self.dec.decode(chunk, final=not chunk)
        except UnicodeDecodeError as err:
            line = self.newlines_bytes + chunk[: err.start].count(b"\n") + 1
            raise _Fatal(f"not valid UTF-8 (byte {self.bytes_read + err.start}); save the file as UTF-8",
                         line=line) from None
        self.bytes_read += len(chunk)
        self.newlines_bytes += chunk.count(b"\n")
        if not chunk:
            self.eof = True
        self.buf += text
        return True

    def line_of(self, pos: int) -> int:
        if pos < self._lpos:
            return self.base_line + self.buf.count("\n", 0, pos)
        self._lline += self.buf.count("\n", self._lpos, pos)
        self._lpos = pos
        return self._lline

    def compact(self, pos: int) -> int:
        if pos > CHUNK:
            self.line_of(pos)
            self.base_line = self._lline
            self.buf = self.buf[pos:]
            self._lpos, pos = 0, 0
        return pos

    def skip_ws(self, pos: int) -> int:
        while True:
            while pos < len(self.buf) and self.buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(self.buf) or not self.more():
                return pos


def _iter_array(f):
    s = _TextStream(f)
    dec = json.JSONDecoder()
    pos = s.skip_ws(0)
    pos += 1  # '['
    index = 0
    pos = s.skip_ws(pos)
    if pos < len(s.buf) and s.buf[pos] == "]":
        pos += 1
    else:
        while True:
            pos = s.compact(s.skip_ws(pos))
            if pos >= len(s.buf):
                raise _Fatal(_ends_after(index), line=s.line_of(pos))
            try:
                obj, end = dec.raw_decode(s.buf, pos)
            except json.JSONDecodeError as err:
                if s.more():
                    continue
                line = s.line_of(err.pos)
                col = err.pos - (s.buf.rfind("\n", 0, err.pos) + 1) + 1
                raise _Fatal(f"invalid JSON at line {line} column {col}: {_json_msg(err)}", line=line,
                             index=index) from None
            if end == len(s.buf) and s.more():
                continue  # a number may continue in the next chunk
            yield index, s.line_of(pos), obj, None
            index += 1
            pos = s.skip_ws(end)
            if pos < len(s.buf) and s.buf[pos] == ",":
                pos = s.skip_ws(pos + 1)
                if pos < len(s.buf) and s.buf[pos] == "]":
                    raise _Fatal("invalid JSON: trailing comma before ']'", line=s.line_of(pos))
                continue
            if pos < len(s.buf) and s.buf[pos] == "]":
                pos += 1
                break
            if pos >= len(s.buf):
                raise _Fatal(_ends_after(index), line=s.line_of(pos))
            raise _Fatal(f"invalid JSON at line {s.line_of(pos)}: expected ',' or ']' after record {index - 1}",
                         line=s.line_of(pos))
    pos = s.skip_ws(pos)
    if pos < len(s.buf):
        raise _Fatal("extra data after the closing ']'", line=s.line_of(pos))


# --------------------------------------------------------------------------------------------- normalising
def detect_format(record: Any) -> str | None:
    """'alpaca', 'sharegpt' or None for one raw record (used when no registry names the formatting)."""
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("conversations"), list) or isinstance(record.get("messages"), list):
        return "sharegpt"
    if "instruction" in record or "output" in record:
        return "alpaca"
    return None


def _renamed(name: str, record: dict) -> str:
    hint = closest(name, [k for k in record if isinstance(k, str)])
    return f" (found {hint!r}: renamed?)" if hint else ""


def _opt_str(record: dict, key: str | None) -> tuple[str, str | None]:
    """Optional string field: (value, problem)."""
    if not key or key not in record or record[key] is None:
        return "", None
    v = record[key]
    if not isinstance(v, str):
        return "", f"expected a string, got {type(v).__name__}"
    return v, None


class Normalizer:
    """Turns raw records of one file into examples; returns (example, field, reason) with example None on reject."""

    def __init__(self, formatting: str | None, columns: dict | None, tags: dict | None, source: str):
        self.formatting = formatting  # None = decide from the first record
        self.user_columns = dict(columns or {})
        self.user_tags = dict(tags or {})
        self.source = source
        self.seen_keys: set[str] = set()
        self.pretraining: str = ""  # set when the records are pre-training text (one message for the whole file)

    def _setup(self, formatting: str, record: dict | None = None) -> None:
        self.formatting = formatting
        base = ALPACA_COLUMNS if formatting == "alpaca" else SHAREGPT_COLUMNS
        self.columns = {**base, **{k: (v or None) for k, v in self.user_columns.items()}}
        if formatting == "sharegpt" and record is not None and not self.user_columns and "messages" in record \
                and "conversations" not in record:
            self.columns["messages"] = "messages"
        tags = dict(SHAREGPT_TAGS)
        if formatting == "sharegpt" and not self.user_tags and record is not None:
            msgs = record.get(self.columns["messages"])
            if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict) and "role" in msgs[0]:
                tags = dict(OPENAI_TAGS)
        tags.update(self.user_tags)
        self.tags = tags

    def __call__(self, index: int, record: Any) -> tuple[dict | None, str | None, str]:
        if record is None:
            return None, None, "record is null"
        if not isinstance(record, dict):
            return None, None, f"record is a {type(record).__name__}; expected an object"
        self.seen_keys.update(k for k in record if isinstance(k, str))
        kind = detect_format(record)
        if self.pretraining or (index == 0 and self._looks_pretraining(record, kind)):
            self.pretraining = self.pretraining or (
                f"pre-training text (records like {{{', '.join(repr(k) for k in list(record)[:3])}}} with no "
                "response): labkit trains SFT on instruction/response pairs (alpaca: instruction/input/output, "
                "or sharegpt conversations); LLaMA-Factory's pre-training stage (stage: pt) is not supported")
            return None, None, self.pretraining
        if self.formatting is None:
            if kind is None:
                return None, None, ("record is neither alpaca (instruction/output) nor sharegpt (conversations/"
                                    f"messages); keys: {', '.join(map(str, record)) or 'none'}")
            self._setup(kind, record)
        elif not hasattr(self, "columns"):
            self._setup(self.formatting, record)
        if kind and kind != self.formatting and self.columns.get(
                "prompt" if self.formatting == "alpaca" else "messages") not in record:
            return None, None, f"record is {kind} but the file is {self.formatting}: the file mixes formats"
        task, problem = _opt_str(record, TASK_KEY)
        if problem:
            return None, TASK_KEY, problem
        if self.formatting == "alpaca":
            msgs, fld, reason = self._alpaca(record)
        else:
            msgs, fld, reason = self._sharegpt(record)
        if msgs is None:
            return None, fld, reason
        return {"messages": msgs, "source": self.source, "index": index, "task": task}, None, ""

    def _looks_pretraining(self, record: dict, kind: str | None) -> bool:
        """Records holding only text (LLaMA-Factory `columns: {prompt: text}` without a response)."""
        if kind == "sharegpt":
            return False
        response = (self.user_columns.get("response") or "output") if self.formatting != "sharegpt" else None
        if response is None or response in record:
            return False
        prompt = self.user_columns.get("prompt") or "instruction"
        keys = {k for k in record if k != TASK_KEY}
        return "text" in keys or keys == {prompt}

    def _tools(self, r: dict):
        """A record that declares tools is refused (tool use is not trained here), never trimmed."""
        key = self.columns.get("tools")
        value = r.get(key) if key else None
        if isinstance(value, str) and value.strip() in ("", "[]", "{}", "null"):  # LLaMA-Factory writes "[]" for none
            value = None
        if value not in (None, [], {}):
            return None, key, ("the record declares tools (function calling); labkit does not train tool use: "
                               "the record is refused rather than trimmed (remove it or its tools field)")
        return "", None, ""

    def _alpaca(self, r: dict):
        c = self.columns
        ok, fld, reason = self._tools(r)
        if ok is None:
            return None, fld, reason
        for role in ("prompt", "response"):
            key = c[role]
            if key not in r:
                return None, key, f"missing field {key!r}{_renamed(key, r)}"
            if r[key] is None:
                return None, key, "is null"
        values = {}
        for role in ("prompt", "query", "response", "system"):
            v, problem = _opt_str(r, c.get(role))
            if problem:
                return None, c[role], problem
            values[role] = v
        if not values["response"].strip():
            return None, c["response"], "empty response"
        user = "\n".join(x for x in (values["prompt"], values["query"]) if x)
        if not user.strip():
            return None, c["prompt"], "empty instruction"
        msgs = [{"role": "system", "content": values["system"]}] if values["system"] else []
        hkey = c.get("history")
        if hkey and r.get(hkey) is not None:
            hist = r[hkey]
            if not isinstance(hist, list):
                return None, hkey, f"expected a list of [query, answer] pairs, got {type(hist).__name__}"
            for j, pair in enumerate(hist):
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                    return None, f"{hkey}[{j}]", "expected a [query, answer] pair of strings"
                if not pair[0].strip() or not pair[1].strip():
                    return None, f"{hkey}[{j}]", "empty query or answer in history"
                msgs += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        last = {"role": "user", "content": user}
        if values["query"]:  # the columns themselves, for templates that lay them out (alpaca-lora's)
            last.update(instruction=values["prompt"], input=values["query"])
        msgs += [last, {"role": "assistant", "content": values["response"]}]
        return msgs, None, ""

    def _sharegpt(self, r: dict):
        c, t = self.columns, self.tags
        ok, fld, reason = self._tools(r)
        if ok is None:
            return None, fld, reason
        key = c["messages"]
        if key not in r:
            return None, key, f"missing field {key!r}{_renamed(key, r)}"
        conv = r[key]
        if not isinstance(conv, list):
            return None, key, f"expected a list of messages, got {type(conv).__name__}"
        if not conv:
            return None, key, "empty conversation"
        roles = {t["user_tag"]: "user", t["assistant_tag"]: "assistant", t["system_tag"]: "system"}
        unsupported = {t.get("observation_tag"), t.get("function_tag")} - {None}
        system, problem = _opt_str(r, c.get("system"))
        if problem:
            return None, c["system"], problem
        msgs = [{"role": "system", "content": system}] if system else []
        expect = "user"
        for j, m in enumerate(conv):
            where = f"{key}[{j}]"
            if not isinstance(m, dict):
                return None, where, f"message is a {type(m).__name__}; expected an object"
            if t["role_tag"] not in m:
                return None, f"{where}.{t['role_tag']}", f"missing role{_renamed(t['role_tag'], m)}"
            if t["content_tag"] not in m:
                return None, f"{where}.{t['content_tag']}", f"missing content{_renamed(t['content_tag'], m)}"
            tag, content = m[t["role_tag"]], m[t["content_tag"]]
            if tag in unsupported:
                return None, f"{where}.{t['role_tag']}", f"role {tag!r} (tool use) is not supported for SFT here"
            if tag not in roles:
                return None, f"{where}.{t['role_tag']}", (f"unknown role {tag!r} (expected one of: "
                                                          f"{', '.join(map(str, roles))})")
            if not isinstance(content, str):
                return None, f"{where}.{t['content_tag']}", f"expected a string, got {type(content).__name__}"
            role = roles[tag]
            if role == "system":
                if j != 0 or system:
                    return None, f"{where}.{t['role_tag']}", "a system message may only come first"
                if content.strip():
                    msgs.append({"role": "system", "content": content})
                continue
            if role != expect:
                want = t["user_tag"] if expect == "user" else t["assistant_tag"]
                return None, f"{where}.{t['role_tag']}", f"roles do not alternate: expected {want!r}, got {tag!r}"
            if not content.strip():
                return None, f"{where}.{t['content_tag']}", "empty response" if role == "assistant" else "empty message"
            msgs.append({"role": role, "content": content})
            expect = "assistant" if role == "user" else "user"
        if not any(m["role"] == "user" for m in msgs):
            return None, key, "empty conversation (no user turn)"
        if msgs[-1]["role"] != "assistant":
            return None, key, "conversation ends without an assistant turn"
        return msgs, None, ""


def _fatal_in_file(report: ValidationReport, counts: DatasetCounts, path: Path, err: _Fatal, good: int) -> None:
    """The file is unusable: the records read before the break are counted as rejected (read == kept + rejected),
    the broken record too when it had begun; one error says what broke and what is lost."""
    reason = err.reason
    if err.index is not None:  # a record began and is cut or broken: it was read, and is rejected
        report.read += 1
        counts.read += 1
        report.rejected += 1
        counts.rejected += 1
    if good:
        reason += (f"; the {good} complete record{'s' if good > 1 else ''} before it "
                   f"{'are' if good > 1 else 'is'} not used (the file is unusable: fix it)")
    report.fatal(str(path), err.line, None, reason, index=err.index)
    report.rejected += good  # records parsed before the fatal point were counted as read; none is kept
    counts.rejected += good


def read_file(path: str | os.PathLike, formatting: str | None = None, columns: dict | None = None,
              tags: dict | None = None, source: str | None = None, report: ValidationReport | None = None,
              check_columns: bool = False) -> tuple[list[dict], ValidationReport]:
    """Read one alpaca or sharegpt file (JSON array or JSONL) into examples; problems go into the report.

    `formatting` None decides per file from the first record; a record in another format is rejected.
    `check_columns`: `columns` came from a registry; a named field no record has is a registry error.
    """
    path = Path(path)
    report = report if report is not None else ValidationReport()
    name = source or path.stem
    if formatting is not None and formatting not in FORMATTINGS:
        report.fatal(str(path), None, "formatting", f"unknown formatting {formatting!r}; valid: alpaca, sharegpt")
        return [], report
    counts = DatasetCounts(name, str(path), formatting or "auto")
    report.datasets.append(counts)
    norm = Normalizer(formatting, columns, tags, name)
    examples: list[dict] = []
    try:
        for index, line, record, problem in iter_json_records(path):
            report.read += 1
            counts.read += 1
            if problem:
                report.reject(str(path), index, line, None, problem)
                continue
            ex, fld, reason = norm(index, record)
            if norm.pretraining:  # one message for the file, not one per record
                report.rejected += 1
                counts.rejected += 1
                continue
            if ex is None:
                report.reject(str(path), index, line, fld, reason)
                continue
            examples.append(ex)
    except _Fatal as err:
        _fatal_in_file(report, counts, path, err, len(examples))
        return [], report
    if norm.pretraining:
        report.fatal(str(path), None, None, f"{norm.pretraining} ({counts.read} records)")
        return [], report
    counts.formatting = norm.formatting or counts.formatting
    if check_columns and report.read:
        for role, key in (columns or {}).items():
            if key and key not in norm.seen_keys and role in ("prompt", "response", "messages", "query",
                                                              "history", "system"):
                report.fatal(str(path), None, f"columns.{role}",
                             f"names field {key!r} which no record has (fields: {', '.join(sorted(norm.seen_keys))})")
    report.kept += len(examples)
    counts.kept += len(examples)
    return examples, report
