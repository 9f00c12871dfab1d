"""Write TFRecord shards of any data set: planned, dealt to MPI ranks, written in parallel, resumable.

    class MyWriter(ShardWriter):               # what is the data set's own
        DATASET = "my-set"                       # the owner of the output folder
        def fingerprint(self): return {"image_size": 256}
        def entries_sha256(self, entries): ...   # what records hold besides pixels
        def record(self, entry): ...             # -> serialized bytes, or raise Rejected(reason)
        def name(self, entry): return entry.name

    refuse_foreign(out_dir, MyWriter.DATASET)   # every rank, first: another data set's records stay untouched
    shards = plan_shards({"train": [...], "val": [...]}, per_shard=500)
    comm, rank, size = start()
    sides = write_all(MyWriter(), shards, out_dir, comm, processes=0)  # rank 0: per shard what was written

Shards are ``<split>-NNNNN-of-NNNNN.tfrecord``; a split's entries are spread
over its shards with sizes differing by at most one, so no remainder is
dropped. Shards are dealt round-robin to ranks, and each rank writes its share
with local processes (spawned: the parent may hold MPI and TensorFlow state).
A shard is written to a temporary name and renamed, then recorded in
``.shards/<file>.json`` (records, SHA-256, the rank and host that wrote it,
what was written and rejected and why). A rerun skips a shard whose record
matches the plan: the same options, byte size, entry names and
``entries_sha256``; any other shard is rewritten,
with a warning saying why. ``.shards/dataset.txt`` names the data set whose
writer owns the folder: records or a manifest.json of another data set (or of
no known writer) are refused, never replaced. Ctrl-C stops the writer
processes and reports, in one line, how many shards are complete (exit 130).
"""
import dataclasses
import errno
import functools
import glob
import hashlib
import json
import logging
import multiprocessing
import os
import platform
import signal
import sys
import time

import numpy as np

from runtime.errors import UserError
from runtime.files import atomic_write, sha256_of, write_json, write_lines

log = logging.getLogger("tfrecords")
NOT_WRITTEN = "not written yet (or its write was interrupted)"
INTERRUPTED_EXIT = 130  # 128 + SIGINT: what a shell reports after Ctrl-C
OWNER = "dataset.txt"  # in .shards/: the data set whose writer made this folder's records
_writing_shard = False  # in a writer process: whether a SIGTERM has a temporary file to clean up


class Interrupted(Exception):
    """Ctrl-C while shards were written; the message says how far it got."""


class Rejected(Exception):
    """An entry that cannot become a record; its message is the reason listed in the manifest."""


class ShardWriter:
    """The data set's part of writing: options, the record of one entry, what makes a shard stale.

    Subclasses must be picklable (they travel to the writer processes).
    """

    DATASET = None  # the manifest's "dataset": which records may share a folder with these

    # The warning when a shard's entries_sha256 no longer matches: say where the change came from.
    METADATA_CHANGED = "the labels or metadata of its images changed since it was written"

    def fingerprint(self):
        """What a shard's bytes depend on besides its entries: a change makes old shards stale."""
        raise NotImplementedError

    def entries_sha256(self, entries):
        """SHA-256 of what the records hold besides pixels (names, labels, ...), in order."""
        raise NotImplementedError

    def record(self, entry):
        """The serialized record of ``entry``, or (record, stats dict) to keep figures for the manifest.

        Raises Rejected(reason) if it cannot be made.
        """
        raise NotImplementedError

    def name(self, entry):
        raise NotImplementedError


def digest_json(obj):
    return hashlib.sha256(json.dumps(obj, separators=(",", ":")).encode()).hexdigest()


@dataclasses.dataclass
class Shard:
    split: str
    index: int
    total: int
    entries: list

    @property
    def filename(self):
        return f"{self.split}-{self.index:05d}-of-{self.total:05d}.tfrecord"


def plan_shards(splits, per_shard):
    """Shards of each split (in the dict's order); sizes differ by at most one, so none is dropped."""
    shards = []
    for split, entries in splits.items():
        if not entries:
            continue
        n = max(1, int(np.ceil(len(entries) / per_shard)))
        for i, idx in enumerate(np.array_split(np.arange(len(entries)), n)):
            shards.append(Shard(split, i, n, [entries[j] for j in idx]))
    return shards


def shuffled(entries, seed):
    """Seeded order so each shard mixes the data set (a reader interleaves shards)."""
    order = np.random.default_rng(seed).permutation(len(entries))
    return [entries[i] for i in order]


def sidecar_path(out_dir, shard_file):
    return os.path.join(out_dir, ".shards", shard_file + ".json")


def shard_staleness(out_dir, shard, writer):
    """None if the shard on disk is what the plan asks for, else why it must be (re)written."""
    try:
        with open(sidecar_path(out_dir, shard.filename), encoding="utf-8") as fh:
            side = json.load(fh)
        size = os.path.getsize(os.path.join(out_dir, shard.filename))
    except (OSError, ValueError):
        return NOT_WRITTEN
    if side.get("options") != writer.fingerprint():
        return f"written with other options {side.get('options')}, now {writer.fingerprint()}"
    if size != side.get("bytes"):
        return f"{size} bytes on disk, {side.get('bytes')} when written: truncated or altered"
    if side.get("planned") != [writer.name(e) for e in shard.entries]:
        return "it holds other images than the current plan"
    if "entries_sha256" not in side:
        return "written by an older version that did not record its labels; rewritten once"
    if side["entries_sha256"] != writer.entries_sha256(shard.entries):
        return writer.METADATA_CHANGED
    return None


def write_shard(job):
    """Write one shard; returns its sidecar dict. Runs in a worker process."""
    shard, writer, out_dir, rank = job
    import tensorflow as tf  # here: workers only (the parent may fork/spawn them)
    final = os.path.join(out_dir, shard.filename)
    sidecar = sidecar_path(out_dir, shard.filename)
    # Drop the old record first: a crash mid-write then leaves no record that
    # could vouch for the new bytes.
    if os.path.exists(sidecar):
        os.remove(sidecar)
    written, rejected, stats = [], [], {}

    def write_records(tmp):
        try:
            write_entries(tmp)
        except tf.errors.ResourceExhaustedError as err:  # TensorFlow's name for ENOSPC on a file write
            raise OSError(errno.ENOSPC, f"No space left on device ({err.message})") from err

    def write_entries(tmp):
        with tf.io.TFRecordWriter(tmp) as out:
            for e in shard.entries:
                try:
                    made = writer.record(e)
                except Rejected as why:
                    rejected.append({"name": writer.name(e), "split": shard.split, "reason": str(why)})
                    continue
                blob, figures = made if isinstance(made, tuple) else (made, None)
                out.write(blob)
                written.append(writer.name(e))
                if figures is not None:
                    stats[writer.name(e)] = figures

    global _writing_shard
    started = time.time()
    _writing_shard = True
    try:
        atomic_write(final, write_records)  # temporary name, fsync, rename, fsync the folder
    finally:
        _writing_shard = False
    side = {"file": shard.filename, "write_started": started, "write_finished": time.time(), "split": shard.split,
            "rank": rank, "host": platform.node(), "records": len(written),
            "bytes": os.path.getsize(final), "sha256": sha256_of(final), "options": writer.fingerprint(),
            "planned": [writer.name(e) for e in shard.entries],
            "entries_sha256": writer.entries_sha256(shard.entries), "written": written, "rejected": rejected,
            "stats": stats}
    write_json(sidecar, side)
    return side


def parse_writer_options(parser, options_cls, argv):
    """(a writer's Options from ``argv``, whether only to check them); the output folder defaults to
    <data-dir>/tfrecords."""
    values = vars(parser.parse_args(argv))
    check_only = values.pop("check_options")
    opts = options_cls(**values)
    return dataclasses.replace(opts, out_dir=opts.out_dir or os.path.join(opts.data_dir, "tfrecords")), check_only


def mpi_comm():
    """COMM_WORLD when started by mpirun/srun with more than one rank, else None."""
    if not any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")):
        return None
    from mpi4py import MPI
    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


def local_processes(requested, comm):
    if requested > 0:
        return requested
    local = 1
    if comm is not None:
        from mpi4py import MPI
        local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()  # ranks on this node
    return max(1, (os.cpu_count() or 1) // local)


def write_my_shards(shards, writer, out_dir, rank, size, processes):
    """Write the shards dealt to ``rank`` (every size-th); skip complete ones."""
    mine = [s for i, s in enumerate(shards) if i % size == rank]
    try:
        todo = stale_shards(mine, writer, out_dir, rank)
        if todo:
            run_writers([(s, writer, out_dir, rank) for s in todo], processes, rank)
    except KeyboardInterrupt:
        # The pool's exit has stopped the writers: what they had begun is only a temporary file.
        done = sum(shard_staleness(out_dir, s, writer) is None for s in mine)
        whose = f"rank {rank}: " if size > 1 else ""
        raise Interrupted(f"{whose}interrupted; {done} of {len(mine)} shards complete; "
                          f"rerun the same command to continue") from None


def stale_shards(mine, writer, out_dir, rank):
    """The shards of ``mine`` to (re)write, each rewrite logged with its reason."""
    todo = []
    for s in mine:
        why = shard_staleness(out_dir, s, writer)
        if why is None:
            continue
        if why != NOT_WRITTEN:  # a first write is no news
            log.warning("rank %d: rewriting %s: %s", rank, s.filename, why)
        todo.append(s)
    if len(todo) < len(mine):
        log.info("rank %d: %d of its %d shards already complete, skipped", rank, len(mine) - len(todo), len(mine))
    return todo


def run_writers(jobs, processes, rank):
    pool = writer_pool(min(processes, len(jobs)))
    try:
        for i, side in enumerate(pool.imap_unordered(write_shard, jobs), 1):
            log.info("rank %d [%d/%d] %s: %d records, %d rejected", rank, i, len(jobs), side["file"],
                     side["records"], len(side["rejected"]))
        pool.close()  # done: the writers leave on their own (a terminate racing idle writers can hang the exit)
    except BaseException:
        pool.terminate()  # Ctrl-C or an error: stop the writers mid-shard
        raise
    finally:
        pool.join()


def writer_pool(processes):
    """Writer processes that ignore Ctrl-C, so that the parent alone reports it, in one line."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the processes started now
    try:
        # spawn, not fork: the parent may hold MPI and TensorFlow state.
        return multiprocessing.get_context("spawn").Pool(processes, initializer=exit_on_sigterm)
    finally:
        signal.signal(signal.SIGINT, previous)


def exit_on_sigterm():
    """In a writer process: the pool's SIGTERM unwinds a shard being written, which removes its temporary file;
    otherwise (idle, or exiting already) the process ends at once, as by default."""
    def stop(signum, frame):
        if _writing_shard:
            sys.exit(INTERRUPTED_EXIT)
        os._exit(INTERRUPTED_EXIT)
    signal.signal(signal.SIGTERM, stop)


def exits_on_interrupt(main):
    """A writer's main: Ctrl-C anywhere is one line on stderr and exit status 130, never a traceback."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Interrupted as err:
            message = str(err)
        except KeyboardInterrupt:
            message = "interrupted; rerun the same command to continue"
        print(message, file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_EXIT)
    return wrapper


def recorded_dataset(path):
    """Who wrote the file at ``path`` (manifest.json, or the plain name in .shards/dataset.txt): the data set
    it names; None when there is no such file."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return None
    except OSError:
        return "an unknown writer"
    if not path.endswith(".json"):
        return text.strip() or "an unknown writer"
    try:
        found = json.loads(text)
    except ValueError:
        return "an unknown writer"
    return (found.get("dataset") if isinstance(found, dict) else None) or "an unknown writer"


def refuse_foreign(out_dir, dataset):
    """Stop, in one line, unless every record and manifest in ``out_dir`` is this data set's writer's."""
    manifest = recorded_dataset(os.path.join(out_dir, "manifest.json"))
    owner = recorded_dataset(os.path.join(out_dir, ".shards", OWNER))
    found = sorted(glob.glob(os.path.join(out_dir, "*.tfrecord")))
    if manifest not in (None, dataset):
        what = f"the records of {manifest} (its manifest.json says so)"
    elif owner not in (None, dataset):
        what = f"the records of {owner} (its .shards/{OWNER} says so)"
    elif found and manifest is None and owner is None:
        what = f"TFRecord files that no writer recorded (such as {os.path.basename(found[0])})"
    else:
        return
    raise UserError(f"{out_dir} holds {what}: write the {dataset} records into another --out-dir, or move "
                    f"those files away first; nothing was changed")


def prepare_out_dir(out_dir, shards, dataset):
    """Rank 0, before any rank writes: the folders exist and are marked as ``dataset``'s, shard files of an
    earlier plan and temporary files of a killed writer are gone (refuse_foreign has vouched for them)."""
    os.makedirs(os.path.join(out_dir, ".shards"), exist_ok=True)
    write_lines(os.path.join(out_dir, ".shards", OWNER), [dataset])
    for tmp in glob.glob(os.path.join(out_dir, ".tmp-*.tfrecord")):  # shards a killed writer never renamed
        os.remove(tmp)
    planned = {s.filename for s in shards}
    for path in glob.glob(os.path.join(out_dir, "*-?????-of-?????.tfrecord")):
        if os.path.basename(path) not in planned:  # other counts would confuse a glob
            log.warning("removing %s: not part of the current shard plan", path)
            os.remove(path)
            side = sidecar_path(out_dir, os.path.basename(path))
            if os.path.exists(side):
                os.remove(side)


def read_sidecars(out_dir, shards):
    """The records of every planned shard, in plan order (after all ranks wrote)."""
    sides = []
    for s in shards:
        with open(sidecar_path(out_dir, s.filename), encoding="utf-8") as fh:
            sides.append(json.load(fh))
    return sides


def shard_entries(sides):
    """The manifest's shard list of one split: file, records, SHA-256."""
    return [{"file": s["file"], "records": s["records"], "bytes": s["bytes"], "sha256": s["sha256"]} for s in sides]


def writing_speed(sides, since):
    """Images/s of the shards written from ``since`` (time.time()) on: records over the span from the
    first shard's start to the last one's end, all writer processes together; process start-up,
    planning and the manifest are outside it. None when no shard was written (a rerun that skipped)."""
    fresh = [s for s in sides if s.get("write_started", 0) >= since]
    if not fresh:
        return None
    span = max(s["write_finished"] for s in fresh) - min(s["write_started"] for s in fresh)
    records = sum(s["records"] + len(s["rejected"]) for s in fresh)
    return {"shards": len(fresh), "images": records, "seconds": span, "images_per_s": records / max(span, 1e-9)}


def check_accounted(sides, rejected, named, what):
    """Every named image written exactly once or rejected; returns the manifest's counts."""
    written_names = [n for side in sides for n in side["written"]]
    # A duplicate entry's image is written once and its second entry rejected:
    # count names, and require each written exactly once.
    accounted = len(set(written_names) | {r["name"] for r in rejected})
    counts = {"named_images": named, "written": len(written_names), "rejected": len(rejected),
              "accounted": accounted}
    if accounted != named or len(written_names) != len(set(written_names)):
        from runtime.errors import UserError
        raise UserError(f"count mismatch: {named} images named in {what}, {len(written_names)} written + "
                        f"{len(rejected)} rejected; please report this")
    return counts


def add_writer_options(parser, size_help, encoding_help, most_size):
    """The flags every TFRecord writer takes: where, how large, how encoded, how parallel."""
    from dataprep import flags, records
    parser.add_argument("--out-dir", default="", help="default: <data-dir>/tfrecords")
    parser.add_argument("--image-size", type=flags.bounded(int, least=32, most=most_size), default=256,
                        help=size_help)
    parser.add_argument("--encoding", choices=records.ENCODINGS, default="raw", help=encoding_help)
    parser.add_argument("--seed", type=flags.SEED, default=0, help="seed of the splits and of the shard order")
    parser.add_argument("--shard-mb", type=flags.bounded(float, above=0, most=10_000), default=150.0,
                        help="target shard size (100-200 MB reads well)")
    parser.add_argument("--images-per-shard", type=flags.bounded(int, least=0, most=10_000_000), default=0,
                        help="fixed shard length (overrides --shard-mb; 0: from --shard-mb)")
    parser.add_argument("--processes", type=flags.PROCESSES, default=0,
                        help="local writer processes per rank (0: cores / local ranks)")
    parser.add_argument("--check-options", action="store_true",
                        help="check the options and the output folder, write nothing (job scripts call this "
                             "before their slow stages)")


def start():
    """(comm or None, rank, size), with logging set up for this rank: a writer's first step."""
    from runtime.logs import setup_logging
    comm = mpi_comm()
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm else (0, 1)
    setup_logging(rank)
    return comm, rank, size


def save_manifest(out_dir, manifest, started, sides):
    """Rank 0: manifest.json, with the writing speed of the shards written since ``started``
    (time.time() at the stage's start), and a summary with the first rejections in the log."""
    manifest["writing"] = writing_speed(sides, started)
    path = os.path.join(out_dir, "manifest.json")
    write_json(path, manifest)
    c = manifest["counts"]
    speed = manifest["writing"]
    log.info("manifest: %d written, %d rejected, of %d named; %s in %.1f s%s", c["written"], c["rejected"],
             c["named_images"], path, time.time() - started,
             f" (shards written at {speed['images_per_s']:.1f} images/s)" if speed else "")
    for r in manifest["rejected"][:20]:
        log.warning("rejected %s: %s", r["name"], r["reason"])
    if c["written"] == 0:
        from runtime.errors import UserError
        first = manifest["rejected"][0]["reason"] if manifest["rejected"] else "none given"
        raise UserError(f"no image was written: all {c['named_images']} were rejected (the first because: "
                        f"{first}); every reason is in {path}")


def write_all(writer, shards, out_dir, comm, processes):
    """Every rank: prepare (rank 0), write this rank's shards, wait; returns all sidecars on rank 0.

    Every rank has passed refuse_foreign(out_dir, writer.DATASET) before this.
    """
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm else (0, 1)
    if comm:
        comm.Barrier()  # every rank has checked the folder before rank 0 changes it
    if rank == 0:
        prepare_out_dir(out_dir, shards, writer.DATASET)
    if comm:
        comm.Barrier()  # the output folder exists before any rank writes
    write_my_shards(shards, writer, out_dir, rank, size, local_processes(processes, comm))
    if comm:
        comm.Barrier()  # every shard is on disk before rank 0 reads the sidecars
    return read_sidecars(out_dir, shards) if rank == 0 else None
