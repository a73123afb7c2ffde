"""The text of Experiment 2, as token sequences.

- text comes from `embedded` (English news and Wikipedia text shipped in the gensim wheel), local files, or a
  Hugging Face dataset; documents are split into a training and a measurement part once, by index;
- `TokenStream` packs a split into fixed-length sequences with the model's own tokenizer and can resume
  at any position.
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import io
import itertools
import json
import queue
import re
import threading
from pathlib import Path
from typing import Iterator

import torch

from kdsae_core.common.errors import BadFile, InvalidParameter, MissingData, RunFolderError

EMBEDDED = "embedded"  # the text (and model) shipped in this environment's packages
MIN_DOC_CHARS = 50  # shorter documents are skipped (the authors' rule for the Pile)
MEASURE_EVERY = 5  # every 5th document (index 4, 9, ...) is held out for measurement


# ---- documents ---------------------------------------------------------------------------------------------
def _gensim_data() -> Path:
    try:
        import gensim  # optional: only the embedded text needs it, and its absence is one sentence
    except ImportError:
        raise MissingData(
            "the embedded text needs the package gensim (pip install gensim==4.4.0, or `make setup`)."
        ) from None
    return Path(gensim.__file__).parent / "test" / "test_data"


def embedded_documents() -> Iterator[str]:
    """~480k words of English Wikipedia (markup stripped by gensim) then ~60k words of news (Lee corpus)."""
    yield from _embedded_documents()


@functools.lru_cache(maxsize=1)
def _embedded_documents() -> tuple[str, ...]:
    # Parsed once per process: the wiki extract takes seconds to parse and is read by every stream.
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki  # (optional, as in _gensim_data)

    data = _gensim_data()
    docs = []
    with bz2.open(data / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2") as f:
        for _title, text, _pageid in extract_pages(f):
            if not text.lstrip().upper().startswith("#REDIRECT"):
                docs.append(_BOLD_ITALIC.sub("", filter_wiki(text)))
    with open(data / "lee_background.cor", encoding="utf-8", errors="replace") as f:
        docs.extend(f)
    return tuple(docs)


_BOLD_ITALIC = re.compile(r"'{2,}")  # wiki bold/italic quotes that filter_wiki leaves in


TEXT_SUFFIXES = (".txt", ".jsonl", ".jsonl.zst")  # .jsonl.zst: the Pile mirror the paper profile names
ZSTD_INSTALL = "pip install zstandard==0.25.0, or `make setup`"  # as pinned in requirements.txt

# Where a document starts: (file, byte offset of its line, its line number, pieces of that line before it).
# `file` is the path inside a text folder ("" for one file, `embedded` or a hub dataset, whose documents are
# numbered by the offset). A TokenStream's state holds the position of the document it is in, and a resumed
# stream starts reading there instead of at the start of the text.
Position = tuple  # (str, int, int, int)


def _open_binary(path: Path, offset: int = 0):
    """A text file's bytes from `offset` on: a plain file seeks there; a zstd-compressed one (.zst) is decompressed
    up to it (a zstd stream cannot seek) but its text before `offset` is never split into lines or parsed."""
    if not path.name.endswith(".zst"):
        f = open(path, "rb")
        f.seek(offset)
        return f
    try:
        import zstandard  # optional: only .zst text needs it, and its absence is one sentence
    except ImportError:
        raise MissingData(
            f"{path} is zstd-compressed and reading it needs the package zstandard ({ZSTD_INSTALL})."
        ) from None
    reader = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    reader.seek(offset)
    return io.BufferedReader(reader)  # (the zstd reader has no readline)


def _file_documents(path: Path, part: str = "", start: Position | None = None) -> Iterator[tuple[Position, str]]:
    """(position, text) of a file's documents from `start` (a position in this file) on. Lines are split at \\n
    in bytes, so that every line's byte offset is known; a .txt line is further split at a lone \\r, as Python's
    text mode (universal newlines) splits it."""
    offset, line, skip = (start[1], start[2] - 1, start[3]) if start else (0, 0, 0)
    jsonl = path.name.endswith((".jsonl", ".jsonl.zst"))
    with _open_binary(path, offset) as f:
        for raw in f:
            line += 1
            here, offset = offset, offset + len(raw)
            if jsonl:
                if raw.strip():
                    yield (part, here, line, 0), _json_text(raw, path, line)
                continue
            pieces = raw.decode("utf-8", "replace").split("\r")
            for k in range(skip, len(pieces)):
                yield (part, here, line, k), pieces[k]
            skip = 0


def _json_text(raw: bytes, path: Path, line: int) -> str:
    try:
        return json.loads(raw)["text"]
    except (ValueError, KeyError, TypeError):
        raise BadFile(f"{path}, line {line}: expected a JSON object with a `text` field.") from None


def iter_documents(dataset: str) -> Iterator[str]:
    """Documents of `dataset`: `embedded`; a .txt file (one document per line), a .jsonl or .jsonl.zst file (a
    `text` field per line) or a folder of them; or a Hugging Face dataset name (streamed; needs `datasets`)."""
    return (text for _, text in positioned_documents(dataset))


def positioned_documents(dataset: str, start: Position | None = None) -> Iterator[tuple[Position, str]]:
    """(position, text) of the documents of `dataset` (see iter_documents) from `start` on (default: the first)."""
    if dataset == EMBEDDED:
        docs = _embedded_documents()
        return ((("", i, 0, 0), docs[i]) for i in range(start[1] if start else 0, len(docs)))
    path = Path(dataset).expanduser()
    if path.is_file():
        return _file_documents(path, "", start)
    if path.is_dir():
        return _folder_documents(path, start)
    if str(dataset).startswith((".", "/", "~")):
        raise BadFile(f"text file or folder {dataset} does not exist.")
    # A streamed dataset cannot seek: its rows before `start` are fetched again and skipped, unread.
    first = start[1] if start else 0
    return ((("", first + i, 0, 0), text) for i, text in enumerate(_hub_documents(dataset, first)))


def _folder_documents(path: Path, start: Position | None) -> Iterator[tuple[Position, str]]:
    files = sorted(p for p in path.rglob("*") if p.name.endswith(TEXT_SUFFIXES) and p.is_file())
    if not files:
        raise BadFile(f"text folder {path} holds no {', '.join(TEXT_SUFFIXES[:-1])} or {TEXT_SUFFIXES[-1]} files.")
    parts = [p.relative_to(path).as_posix() for p in files]
    if start and start[0] not in parts:
        raise BadFile(
            f"text folder {path} no longer holds {start[0]}, where the run stopped reading: resume with the "
            "text it started with."
        )
    first = parts.index(start[0]) if start else 0
    for i in range(first, len(files)):
        yield from _file_documents(files[i], parts[i], start if i == first else None)


def _hub_documents(name: str, skip: int = 0) -> Iterator[str]:
    try:
        import datasets  # heavy and optional: only a hub dataset needs it
    except ImportError:
        raise MissingData(
            f"streaming the dataset {name} needs the `datasets` package (pip install "
            "'kdsae[paper]'); or pass local text with --dataset PATH."
        ) from None
    try:
        ds = datasets.load_dataset(name, split="train", streaming=True)
        for row in itertools.islice(ds, skip, None):
            yield row["text"]
    except (OSError, ConnectionError, ValueError) as e:
        raise MissingData(f"dataset {name} could not be streamed: {_stream_failure(e)}") from None


def _stream_failure(e: Exception) -> str:
    """The real cause of a streaming failure, in words: a missing codec is not a missing hub."""
    first = (str(e).splitlines() or [type(e).__name__])[0][:160]
    if "zstd" in first.lower():
        return (
            f"its files are zstd-compressed and this environment cannot decompress them ({first}); install "
            f"zstandard ({ZSTD_INSTALL})."
        )
    if isinstance(e, ConnectionError) or "offline" in first.lower() or "connect" in first.lower():
        return f"the hub is not reachable ({first}); pass local text with --dataset PATH."
    return f"{first}; check the dataset name, or pass local text with --dataset PATH."


def split_documents(docs: Iterator[str], split: str) -> Iterator[tuple[int, str]]:
    """(index, text) of the documents in `split` (train | measure), after skipping short documents and
    repeats of an earlier document (so no measurement text was seen in training)."""
    return ((i, doc) for _, i, doc in _kept_documents(((None, d) for d in docs), split, 0, set(), bytearray()))


DIGEST_BYTES = 16  # blake2b digest of a document's text: what recognises a repeat


def _kept_documents(docs, split: str, index: int, seen: set, digests: bytearray):
    """(position, index, text) of `split`'s documents among the (position, text) pairs `docs`, which start at the
    document numbered `index` among the kept ones; `seen` holds the digests of the documents kept before it, and
    every kept document's digest is added to it and appended to `digests`."""
    if split not in ("train", "measure"):
        raise InvalidParameter(f"split must be train or measure (got {split!r}).")
    for pos, doc in docs:
        doc = doc.strip()
        if len(doc) < MIN_DOC_CHARS:
            continue
        digest = hashlib.blake2b(doc.encode("utf-8", "replace"), digest_size=DIGEST_BYTES).digest()
        if digest in seen:
            continue
        seen.add(digest)
        digests += digest
        if (index % MEASURE_EVERY == MEASURE_EVERY - 1) == (split == "measure"):
            yield pos, index, doc
        index += 1


DOCS_PER_CALL = 256  # documents per call of the tokenizer (its batch call runs them in parallel, without the GIL)
CHARS_PER_CALL = 1 << 20  # ... or fewer, when they are long
BLOCKS_AHEAD = 4  # tokenised blocks of documents kept ready for the training thread


class _Block:
    """Tokenised documents: their positions and indices, all their tokens in one tensor (each document's followed
    by the separator) and where each document's tokens start (`starts[k]`..`starts[k + 1]`)."""

    def __init__(self, kept: list, ids: list[list[int]], sep: int | None):
        self.positions, self.indices = [p for p, _, _ in kept], [i for _, i, _ in kept]
        tail = [sep] if sep is not None else []
        self.tokens = torch.tensor([t for doc in ids for t in (*doc, *tail)], dtype=torch.int64)
        self.starts = [0, *itertools.accumulate(len(doc) + len(tail) for doc in ids)]


_END = object()  # the text is used up


class TokenStream:
    """Fixed-length token sequences from one split of a corpus, resumable at any position.

    Documents are tokenised without special tokens and joined by the tokenizer's separator (SEP for
    BERT-style tokenizers, EOS otherwise); a BERT-style tokenizer also starts every sequence with CLS.
    A background thread reads and tokenises the text ahead of the caller, many documents per tokenizer call.
    The state is a cursor: the position of the document holding the next token, its index and the tokens of it
    already used; `seen(state)` are the digests of the documents before it (what recognises a repeat), which a
    resumed stream needs too. A resumed stream seeks to the document (local files) and tokenises only from there.
    """

    def __init__(self, tokenizer, dataset: str, context: int, split: str = "train"):
        if context < 2:
            raise InvalidParameter(f"the context length must be at least 2 tokens (got {context}).")
        self.tokenizer, self.dataset, self.context, self.split = tokenizer, dataset, int(context), split
        self.cls = getattr(tokenizer, "cls_token_id", None)
        sep = getattr(tokenizer, "sep_token_id", None)
        self.sep = sep if sep is not None else getattr(tokenizer, "eos_token_id", None)
        self._worker = None
        self._set({"doc": None, "index": 0, "token": 0}, b"")

    @property
    def body(self) -> int:
        return self.context - (1 if self.cls is not None else 0)

    def state(self) -> dict:
        """Where the next token is: a few numbers, whatever is buffered (taken every step)."""
        if self._block is None:
            return dict(self._start)
        k, tok = self._doc, self._tok
        if k == len(self._block.indices):  # past the block's last document (the text ended there): the cursor is
            k -= 1  # that document's end, which a resumed stream steps over
            tok = int(self._block.starts[k + 1] - self._block.starts[k])
        return {"doc": list(self._block.positions[k]), "index": self._block.indices[k], "token": tok}

    def seen(self, state: dict) -> bytes:
        """The digests of the documents kept before `state`'s document (16 bytes each, in order)."""
        return bytes(self._digests[: DIGEST_BYTES * int(state["index"])])

    def load_state(self, state: dict, seen: bytes) -> None:
        if "doc" not in state:
            raise RunFolderError(
                "the saved data position was written by an older kdsae (leftover tokens, no cursor): "
                "finish the run with that version, or start it over with --force."
            )
        self.close()
        self._set(state, seen)

    def _set(self, state: dict, seen: bytes) -> None:
        """Continue from `state` (the next block is read from there by a new background thread)."""
        self._start = {"doc": state["doc"], "index": int(state["index"]), "token": int(state["token"])}
        self._digests = bytearray(seen)
        self._block, self._doc, self._tok = None, 0, self._start["token"]

    def close(self) -> None:
        """Stop the background thread (it also stops when the text ends); a later batch continues from here."""
        if self._worker is None:
            return
        self._stop.set()
        while self._worker.is_alive():  # drain, so that a thread waiting to put a block sees the stop
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._worker = None
        here = self.state()
        self._set(here, self.seen(here))

    def _next_block(self) -> _Block:
        if self._worker is None:
            self._queue, self._stop = queue.Queue(maxsize=BLOCKS_AHEAD), threading.Event()
            self._worker = threading.Thread(target=self._produce, name=f"kdsae-tokens-{self.split}", daemon=True)
            self._worker.start()
        got = self._queue.get()
        if got is _END:
            self._queue.put(_END)  # (asked again: still the end)
            raise MissingData(
                f"the {self.split} part of the text {self.dataset!r} ran out: it holds fewer tokens "
                "than asked for; use fewer --tokens, a smaller measurement budget or a larger corpus."
            )
        if isinstance(got, BaseException):
            self._queue.put(got)
            raise got
        return got

    def _produce(self) -> None:
        """The background thread: read, split and tokenise blocks of documents from the cursor on."""
        start, digests = self._start, self._digests
        seen = {bytes(digests[i : i + DIGEST_BYTES]) for i in range(0, len(digests), DIGEST_BYTES)}
        try:
            where = tuple(start["doc"]) if start["doc"] is not None else None
            kept = _kept_documents(positioned_documents(self.dataset, where), self.split, start["index"], seen, digests)
            for block in _batched(kept):
                ids = self.tokenizer([text for _, _, text in block], add_special_tokens=False, verbose=False)[
                    "input_ids"
                ]
                if not self._put(_Block(block, ids, self.sep)):
                    return
            self._put(_END)
        except BaseException as e:  # (the caller raises it at its next batch)
            self._put(e)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next_batch(self, n_seq: int) -> torch.Tensor:
        """[n_seq, context] int64. Raises MissingData when the split runs out."""
        need, filled = n_seq * self.body, 0
        body = torch.empty(need, dtype=torch.int64)
        while filled < need:
            if self._block is None or self._doc == len(self._block.indices):
                self._block, self._doc = self._next_block(), 0
            first, end = self._block.starts[self._doc] + self._tok, self._block.starts[self._doc + 1]
            if first == end:  # this document is used up: the next one
                self._doc, self._tok = self._doc + 1, 0
                continue
            take = min(need - filled, end - first)
            body[filled : filled + take] = self._block.tokens[first : first + take]
            filled, self._tok = filled + take, self._tok + take
        out = body.view(n_seq, self.body)
        if self.cls is not None:
            out = torch.cat([torch.full((n_seq, 1), self.cls, dtype=torch.int64), out], dim=1)
        return out


def _batched(kept: Iterator) -> Iterator[list]:
    """Blocks of DOCS_PER_CALL documents (fewer, of CHARS_PER_CALL characters, when they are long)."""
    while True:
        block, chars = [], 0
        for item in kept:
            block.append(item)
            chars += len(item[2])
            if len(block) >= DOCS_PER_CALL or chars >= CHARS_PER_CALL:
                break
        if not block:
            return
        yield block
