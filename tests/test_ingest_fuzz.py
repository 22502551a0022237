"""Hostile input for ingestion: a seeded random mix of bad SKILL.md files, JSONL lines and Parquet files (plus the
named cases of issue 17) in one tree, run through the real `ingest`. Every input must be written or quarantined
(one reason, naming its file), folders not entered must be counted as skipped, nothing may hang, raise or leave a
temporary file behind."""

import gzip
import json
import os
import random
import socket
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skillrouter.config import CorpusConfig
from skillrouter.corpus.ingest import ingest, read_skills

pytestmark = pytest.mark.timeout(90)

SEED = 17
RANDOM_SKILL_FILES = 160
RANDOM_JSONL_LINES = 60
MAX_CHARS = 8_000
MAX_FILE_BYTES = 256 * 1024
CONFIG = CorpusConfig(max_skill_chars=MAX_CHARS, max_file_bytes=MAX_FILE_BYTES)
WORDS = ["deploy", "lint", "résumé", "日本語", "kubernetes", "pdf", "naïve", "emoji-🚀", "sql", "release", "tests"]
BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)])


def skill_md(name, description, body, **extra) -> str:
    lines = [f"name: {json.dumps(name)}", f"description: {json.dumps(description)}"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return "---\n" + "\n".join(lines) + "\n---\n\n" + body + "\n"


class Corpus:
    """The tree being built and what ingestion must make of it."""

    def __init__(self, root: Path, outside: Path, rng: random.Random):
        self.root, self.outside, self.rng = root, outside, rng
        self.ok: set[str] = set()  # ids that must be written
        self.bad: dict[str, str] = {}  # location -> reason it must be quarantined with
        self.skipped: Counter[str] = Counter()
        self.classes: Counter[str] = Counter()
        self.n = 0

    def folder(self, cls: str) -> tuple[Path, str]:
        """A fresh folder for one input, at a random depth; returns it and the skill id it gives."""
        self.n += 1
        self.classes[cls] += 1
        parts = [self.rng.choice(["team", "ops", "docs", "x"]) for _ in range(self.rng.randrange(3))]
        parts.append(f"c{self.n:03d}-{cls}")
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True)
        return path, "/".join(parts)

    def file_name(self) -> str:
        return self.rng.choice(["SKILL.md", "SKILL.md", "skill.md", "Skill.md", "SKILL.MD"])

    def text(self, words: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(words))

    def valid_text(self, **extra) -> str:
        return skill_md(self.text(2), self.text(8), f"# {self.text(3)}\n\n{self.text(40)}", **extra)

    def expect_ok(self, skill_id: str) -> None:
        self.ok.add(skill_id)

    def expect_bad(self, path: Path | str, reason: str) -> None:
        self.bad[str(path)] = reason


# --- SKILL.md classes: each writes one input and says what must become of it --------------------------------


def c_valid(c: Corpus):
    folder, sid = c.folder("valid")
    (folder / c.file_name()).write_text(c.valid_text(license="MIT", tags=f"[{c.text(1)}, {c.text(1)}]"))
    c.expect_ok(sid)


def c_nonstring_keys(c: Corpus):
    folder, sid = c.folder("keys")
    keys = c.rng.sample(["on: push", "true: x", "1: one", "~: nothing", "2024-01-01: day", "1.5: half",
                         "off: 3", "nested: {1: a, false: b}"], 4)
    (folder / c.file_name()).write_text(c.valid_text(**dict(k.split(": ", 1) for k in keys)))
    c.expect_ok(sid)


def c_symlink_inside(c: Corpus):
    folder, sid = c.folder("link-in")
    target = c.root / "_targets" / f"target-{c.n}.md"
    target.parent.mkdir(exist_ok=True)
    target.write_text(c.valid_text())
    (folder / "SKILL.md").symlink_to(os.path.relpath(target, folder))
    c.expect_ok(sid)


def bad_file(cls: str, reason: str, content: str | bytes):
    def make(c: Corpus):
        folder, _ = c.folder(cls)
        path = folder / c.file_name()
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        c.expect_bad(path, reason)
    make.__name__ = f"c_{cls}"
    return make


def c_deep_yaml(c: Corpus):
    folder, _ = c.folder("deep-yaml")
    depth = c.rng.choice([40, 1000, 50_000])
    deep = ("x: " + "[" * depth + "]" * depth) if c.rng.random() < 0.5 else "x:\n" + "".join(
        f"{'  ' * (i + 1)}k{i}:\n" for i in range(min(depth, 200))) + "  " * 201 + "v"
    path = folder / "SKILL.md"
    path.write_text("---\nname: n\ndescription: d\n" + deep + "\n---\nbody\n")
    c.expect_bad(path, "invalid_front_matter")


def c_metadata_over_cap(c: Corpus):
    folder, _ = c.folder("big-meta")
    path = folder / "SKILL.md"
    path.write_text(c.valid_text(notes=json.dumps("m" * (MAX_CHARS + c.rng.randrange(100)))))
    c.expect_bad(path, "too_large")


def c_front_matter_over_cap(c: Corpus):
    folder, _ = c.folder("big-front")
    path = folder / "SKILL.md"
    path.write_text(c.valid_text(**{f"k{i}": "v" * 100 for i in range(700)}))  # ~73K characters
    c.expect_bad(path, "invalid_front_matter")


def c_file_over_cap(c: Corpus):
    folder, _ = c.folder("big-file")
    path = folder / "SKILL.md"
    with open(path, "wb") as fh:  # sparse: costs no disk, and must not be read
        fh.write(c.valid_text().encode())
        fh.truncate(MAX_FILE_BYTES + 1 + c.rng.randrange(10**9))
    c.expect_bad(path, "file_too_large")


def c_fifo(c: Corpus):
    folder, _ = c.folder("fifo")
    path = folder / "SKILL.md"
    os.mkfifo(path)  # opening it for reading would block forever
    c.expect_bad(path, "not_a_regular_file")


def c_dev_zero(c: Corpus):
    folder, _ = c.folder("dev-zero")
    path = folder / c.file_name()
    path.symlink_to("/dev/zero")
    c.expect_bad(path, "symlink_outside_tree")


def c_symlink_outside(c: Corpus):
    folder, _ = c.folder("link-out")
    target = c.outside / f"secret-{c.n}.md"
    target.write_text(c.valid_text())  # a valid skill, but outside the tree: never read
    path = folder / "SKILL.md"
    path.symlink_to(target if c.rng.random() < 0.5 else os.path.relpath(target, folder))
    c.expect_bad(path, "symlink_outside_tree")


def c_dangling(c: Corpus):
    folder, _ = c.folder("dangling")
    path = folder / "SKILL.md"
    path.symlink_to(folder / "nowhere.md")
    c.expect_bad(path, "unreadable_file")


def c_symlink_loop(c: Corpus):
    folder, _ = c.folder("loop")
    (folder / "a.md").symlink_to("SKILL.md")
    (folder / "SKILL.md").symlink_to("a.md")
    c.expect_bad(folder / "SKILL.md", "symlink_loop")


def c_socket(c: Corpus):
    folder, _ = c.folder("socket")
    path = folder / "SKILL.md"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
    except OSError:  # path too long for AF_UNIX: a FIFO instead
        os.mkfifo(path)
    finally:
        sock.close()
    c.expect_bad(path, "not_a_regular_file")


def c_bad_id(c: Corpus):
    c.n += 1
    c.classes["bad-id"] += 1
    kind = c.rng.choice(["control", "not-utf8", "long"])
    if kind == "control":
        folder = c.root / f"c{c.n:03d}-ctl\x01{c.text(1)}"
    elif kind == "not-utf8":
        folder = Path(os.fsdecode(os.fsencode(c.root) + f"/c{c.n:03d}-".encode() + b"\xff\xfe"))
    else:
        folder = c.root / f"c{c.n:03d}-long" / ("x" * 200) / ("y" * 200) / ("z" * 200)
    folder.mkdir(parents=True)
    path = folder / "SKILL.md"
    path.write_text(c.valid_text())
    c.expect_bad(path, "invalid_id")


def c_duplicate_case(c: Corpus):
    """SKILL.md and skill.md in one folder: the same id twice; the second is quarantined as a duplicate."""
    folder, sid = c.folder("two-spellings")
    (folder / "SKILL.md").write_text(c.valid_text())
    (folder / "skill.md").write_text(c.valid_text())
    c.expect_ok(sid)
    c.expect_bad(folder / "skill.md", "duplicate_id")


CLASSES = [
    c_valid, c_valid, c_valid, c_nonstring_keys, c_symlink_inside,
    bad_file("alias-bomb", "invalid_front_matter", f"---\nname: n\ndescription: d\n{BILLION_LAUGHS}\n---\nbody\n"),
    bad_file("alias-loop", "invalid_front_matter", "---\nname: n\ndescription: d\nloop: &a [*a]\n---\nbody\n"),
    bad_file("huge-int", "invalid_front_matter", "---\nname: n\ndescription: d\nn: " + "7" * 5000 + "\n---\nb\n"),
    bad_file("surrogate", "invalid_text", '---\nname: "a\\ud800b"\ndescription: d\n---\nbody\n'),
    bad_file("surrogate-key", "invalid_text", '---\nname: n\ndescription: d\n"\\udfff": 1\n---\nbody\n'),
    bad_file("bad-date", "invalid_front_matter", "---\nname: n\ndescription: d\nwhen: 2024-13-45\n---\nbody\n"),
    bad_file("dup-key", "invalid_front_matter", "---\nname: n\ndescription: d\nname: m\n---\nbody\n"),
    bad_file("python-tag", "invalid_front_matter", "---\nname: !!python/object/apply:os.system [ls]\n---\nb\n"),
    bad_file("not-utf8", "not_utf8", "---\nname: caf\xe9\ndescription: d\n---\nbody\n".encode("latin-1")),
    bad_file("binary", "binary_content", b"---\nname: n\n---\n\x00\x01\x02\xff"),
    bad_file("no-front", "missing_front_matter", "# just markdown\n"),
    bad_file("unclosed", "invalid_front_matter", "---\nname: n\ndescription: d\n"),
    bad_file("list-front", "invalid_front_matter", "---\n- a\n- b\n---\nbody\n"),
    bad_file("empty", "missing_front_matter", ""),
    bad_file("no-name", "missing_name", "---\ndescription: d\n---\nbody\n"),
    bad_file("no-desc", "missing_description", "---\nname: n\n---\nbody\n"),
    bad_file("no-body", "empty_body", "---\nname: n\ndescription: d\n---\n\n"),
    bad_file("list-name", "invalid_field", "---\nname: [a, b]\ndescription: d\n---\nbody\n"),
    c_deep_yaml, c_metadata_over_cap, c_front_matter_over_cap, c_file_over_cap, c_fifo, c_dev_zero,
    c_symlink_outside, c_dangling, c_symlink_loop, c_socket, c_bad_id, c_duplicate_case,
]


# --- JSONL lines and Parquet files at the tree's top level --------------------------------------------------


JSONL_KINDS = ["valid", "valid", "bad-json", "deep", "huge-int", "surrogate", "surrogate-meta", "not-object",
               "too-long", "deep-meta", "no-id", "ctl-id", "long-id", "big-meta", "nul", "not-utf8", "duplicate"]


def jsonl_line(c: Corpus, i: int, kind: str) -> tuple[str | bytes, str | None, str | None]:
    """(line, id it must be written under, or reason it must be quarantined with)."""
    c.classes[f"jsonl:{kind}"] += 1
    rec = {"id": f"jsonl/{i}", "name": c.text(2), "description": c.text(6), "body": c.text(30), "lic": "MIT"}
    if kind == "valid":
        return json.dumps(rec, ensure_ascii=c.rng.random() < 0.5), rec["id"], None
    if kind == "bad-json":
        return '{"id": "x", "name": ', None, "invalid_json"
    if kind == "deep":
        depth = c.rng.choice([2_000, 100_000])
        return '{"id": "deep", "m": ' + "[" * depth + "]" * depth + "}", None, "invalid_json"
    if kind == "huge-int":
        return '{"id": "big", "n": ' + "9" * 5000 + "}", None, "invalid_json"
    if kind == "surrogate":
        return json.dumps(rec).replace('"name": "', '"name": "\\ud800'), None, "invalid_text"
    if kind == "surrogate-meta":
        return json.dumps({**rec, "\udc80": 1}), None, "invalid_text"
    if kind == "not-object":
        return c.rng.choice(["[1, 2]", '"text"', "42", "null"]), None, "invalid_json"
    if kind == "too-long":
        return json.dumps({**rec, "body": "z" * (MAX_FILE_BYTES + 10)}), None, "line_too_large"
    if kind == "deep-meta":
        return json.dumps({**rec, "m": json.loads("[" * 60 + "]" * 60)}), None, "invalid_metadata"
    if kind == "no-id":
        return json.dumps({k: v for k, v in rec.items() if k != "id"}), None, "missing_id"
    if kind == "ctl-id":
        return json.dumps({**rec, "id": "a\u0007b"}), None, "invalid_id"
    if kind == "long-id":
        return json.dumps({**rec, "id": "é" * 300}), None, "invalid_id"
    if kind == "big-meta":
        return json.dumps({**rec, "extra": "m" * MAX_CHARS}), None, "too_large"
    if kind == "duplicate":  # the id of a skill in the tree
        return json.dumps({**rec, "id": "gha"}), None, "duplicate_id"
    if kind == "nul":
        return json.dumps({**rec, "body": "a\u0000b"}), None, "binary_content"
    return json.dumps(rec).encode()[:-2] + b"\xff\"}", None, "not_utf8"


def write_jsonl(c: Corpus, path: Path, n: int, first: int, gz: bool = False) -> None:
    lines = []
    kinds = JSONL_KINDS + [c.rng.choice(JSONL_KINDS) for _ in range(n - len(JSONL_KINDS))]
    for i, kind in enumerate(kinds, start=first):
        line, ok, reason = jsonl_line(c, i, kind)
        lines.append(line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass"))
        if ok:
            c.expect_ok(ok)
        else:
            c.expect_bad(f"{path}:{i - first + 1}", reason)
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)


def parquet_rows(prefix: str, n: int) -> list[dict]:
    r = random.Random(prefix)
    return [{"id": f"{prefix}/{i}", "name": f"n{i}", "description": "parquet skill",
             "body": "".join(r.choice("abcdefgh ") for _ in range(300)),
             "metadata": json.dumps({"k": i, "deep": [[[i]]]})} for i in range(n)]


def write_corrupt_parquet(path: Path, prefix: str, checksums: bool) -> None:
    """Three row groups of 10 rows; the second's `body` data page is overwritten in the middle."""
    pq.write_table(pa.Table.from_pylist(parquet_rows(prefix, 30)), path, row_group_size=10, compression="none",
                   use_dictionary=False, write_page_checksum=checksums)
    col = pq.ParquetFile(path).metadata.row_group(1).column(3)
    data = bytearray(path.read_bytes())
    middle = col.data_page_offset + col.total_compressed_size // 2
    data[middle:middle + 40] = bytes(b ^ 0x5A for b in data[middle:middle + 40])
    path.write_bytes(bytes(data))


def build(tmp_path: Path) -> Corpus:
    root, outside = tmp_path / "tree", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    c = Corpus(root, outside, random.Random(SEED))
    for make in CLASSES:  # every class at least once, then a seeded random mix
        make(c)
    for _ in range(RANDOM_SKILL_FILES - len(CLASSES)):
        c.rng.choice(CLASSES)(c)

    # Named cases of issue 17
    (root / "gha").mkdir()
    (root / "gha" / "SKILL.md").write_text(skill_md("gha", "A workflow-style front matter.", "Steps.", on="push"))
    c.expect_ok("gha")
    bomb = root / "laughs" / "SKILL.md"
    bomb.parent.mkdir()
    bomb.write_text(f"---\n{BILLION_LAUGHS}\n---\nbody\n")
    c.expect_bad(bomb, "invalid_front_matter")
    (root / ".claude" / "skills" / "hidden-ok").mkdir(parents=True)  # dot-folders are read ...
    (root / ".claude" / "skills" / "hidden-ok" / "SKILL.md").write_text(c.valid_text())
    c.expect_ok(".claude/skills/hidden-ok")
    (root / ".git" / "objects" / "x").mkdir(parents=True)  # ... except version-control internals
    (root / ".git" / "objects" / "x" / "SKILL.md").write_text(c.valid_text())
    c.skipped["vcs_folder"] += 1
    (root / "linked-folder").symlink_to(outside)  # symlinked folders are not entered
    (outside / "SKILL.md").write_text(c.valid_text())
    c.skipped["symlinked_folder"] += 1
    (root / "gha" / "examples").mkdir()  # a data file below the top level is a skill's asset, not a corpus
    (root / "gha" / "examples" / "sample.jsonl").write_text("{}\n")
    c.skipped["data_file_below_top_level"] += 1
    deep = root / "deep"  # past PATH_MAX
    deep.mkdir()
    fd = os.open(deep, os.O_RDONLY)
    try:
        for _ in range(22):
            os.mkdir("d" * 200, dir_fd=fd)
            child = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("SKILL.md", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    finally:
        os.close(fd)
    c.bad["PATH_MAX"] = "path_too_long"  # the exact folder is checked in the test

    # Data files at the top level, beside the SKILL.md folders: all read
    write_jsonl(c, root / "pool.jsonl", RANDOM_JSONL_LINES, 0)
    write_jsonl(c, root / "more.jsonl.gz", 20, 1000, gz=True)
    pq.write_table(pa.Table.from_pylist(parquet_rows("pq-ok", 25)), root / "table.parquet", row_group_size=10)
    c.ok |= {f"pq-ok/{i}" for i in range(25)}
    for name, checksums in (("corrupt.parquet", False), ("corrupt-crc.parquet", True)):
        write_corrupt_parquet(root / name, name, checksums)
        c.ok |= {f"{name}/{i}" for i in (*range(10), *range(20, 30))}
        c.expect_bad(f"{root / name}#rows11-20", "unreadable_rows")
    (root / "footer.parquet").write_bytes(b"PAR1" + os.urandom(64))
    c.expect_bad(root / "footer.parquet", "unreadable_file")
    os.mkfifo(root / "fifo.jsonl")
    c.expect_bad(root / "fifo.jsonl", "not_a_regular_file")
    (root / "zero.parquet").symlink_to("/dev/zero")
    c.expect_bad(root / "zero.parquet", "symlink_outside_tree")
    return c


def check(c: Corpus, out: Path, summary) -> None:
    entries = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert summary.read == summary.written + summary.quarantined
    assert summary.quarantined == len(entries)
    written = [s.id for s in read_skills(out)]
    assert len(written) == len(set(written)) == summary.written
    assert set(written) == c.ok
    for entry in entries:
        assert entry["reason"] and entry["detail"] and entry["location"].startswith(str(c.root)), entry
        assert entry["reason"] not in ("read_error", "invalid_record"), entry  # nothing unforeseen
    found = {e["location"]: e["reason"] for e in entries}
    assert len(found) == len(entries)  # one entry per input
    too_long = [loc for loc, reason in found.items() if reason == "path_too_long"]
    assert len(too_long) == 1 and "/deep/ddd" in too_long[0]
    assert len(os.fsencode(too_long[0])) >= 4096 > len(os.fsencode(os.path.dirname(too_long[0])))
    expected = {k: v for k, v in c.bad.items() if k != "PATH_MAX"}
    assert {k: v for k, v in found.items() if k != too_long[0]} == expected
    assert summary.skipped == dict(c.skipped)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_hostile_tree_every_input_written_or_quarantined(tmp_path):
    c = build(tmp_path)
    inputs = len(c.ok) + len(c.bad)
    assert inputs >= 150 and RANDOM_SKILL_FILES >= 150
    out = tmp_path / "out"
    summary = ingest([str(c.root)], out, CONFIG, progress=False)
    check(c, out, summary)
    gha = next(s for s in read_skills(out) if s.id == "gha")
    assert gha.metadata["on"] == "push"  # a GitHub-Actions-style key keeps its name
    keys = [s for s in read_skills(out) if "-keys" in s.id]
    assert keys and all(all(isinstance(k, str) for k in s.metadata) for s in keys)
    print(f"\n{inputs} inputs: {len(c.ok)} valid, {len(c.bad)} hostile, {sum(c.skipped.values())} skipped; "
          f"classes {dict(sorted(c.classes.items()))}")


def test_cli_ingest_exit_code_and_summary_with_a_hostile_mix(tmp_path):
    c = build(tmp_path)
    out = tmp_path / "out"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "skillrouter"), "ingest", str(c.root), "--out", str(out), "--quiet",
         f"corpus.max_skill_chars={MAX_CHARS}", f"corpus.max_file_bytes={MAX_FILE_BYTES}"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"written {len(c.ok)}" in done.stdout and f"quarantined {len(c.bad)}" in done.stdout
    assert "quarantine reason symlink_outside_tree" in done.stdout and "skipped, not read vcs_folder" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["written"] == len(c.ok) and summary["skipped"] == dict(c.skipped)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_fifo_and_device_as_named_sources_fail_fast_without_output(tmp_path):
    from skillrouter.corpus.readers import UnsupportedSource

    fifo = tmp_path / "skills.jsonl"
    os.mkfifo(fifo)
    for src in (fifo, Path("/dev/zero")):
        with pytest.raises(UnsupportedSource, match="not a file or a folder"):
            ingest([str(src)], tmp_path / "out", CONFIG, progress=False)
    assert not (tmp_path / "out").exists()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
