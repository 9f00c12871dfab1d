"""Extract tar.gz and zip archives safely, in parallel, idempotently.

    python -m dataprep.extract --archives-dir data/chestxray14 --dest data/chestxray14/images_all --jobs 2 \
        --expect chestxray14
    python -m dataprep.extract --archives-dir data/kvasir-seg --dest data/kvasir-seg --pattern '*.zip'

For each archive matching ``--pattern`` (default ``*.tar.gz``) in the folder:
refuse members with an absolute path, a ``..`` component or a non-regular
type (link, device); write every file via a
temporary name (a truncated or corrupt archive fails while it is read: gzip
and tar check their stream, zip its central directory and each member's
CRC); record ``<dest>/.extracted/<archive>.json`` (archive size and mtime, member
count). A rerun skips archives whose record matches and whose files are all
present. A truncated or corrupt archive is named, the others carry on, and the
exit status is 1 at the end. With ``--expect DATASET`` it first checks that
the download is complete: missing archives (or ones left as ``.part``) are an
error naming them, unless ``--allow-partial`` asks for the subset.
"""
import collections
import contextlib
import errno
import glob
import json
import logging
import multiprocessing
import os
import stat
import sys
import tarfile
import zipfile
import zlib

from dataprep import flags
from runtime.errors import UserError, main_guard
from runtime.files import write_json
from runtime.logs import setup_logging

log = logging.getLogger("extract")


class ArchiveError(Exception):
    pass


# One member of either archive kind: its path, "file" | "dir" | "other", and how to read it.
Member = collections.namedtuple("Member", "name kind open")


@contextlib.contextmanager
def members(archive):
    """The archive's members, in order, for ``*.tar.gz`` and ``*.zip``."""
    if archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            def kind(info):
                if info.is_dir():
                    return "dir"
                return "other" if stat.S_ISLNK(info.external_attr >> 16) else "file"  # a symlink entry
            yield (Member(i.filename, kind(i), lambda i=i: z.open(i)) for i in z.infolist())
    else:
        with tarfile.open(archive, "r:gz") as tar:
            yield (Member(m.name, "file" if m.isfile() else "dir" if m.isdir() else "other",
                          lambda m=m: tar.extractfile(m)) for m in tar)


def unsafe_reason(member):
    """Why ``member`` must not be extracted, or None."""
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        return f"absolute path {name!r}"
    if ".." in name.replace("\\", "/").split("/"):
        return f"path with '..' {name!r}"
    if member.kind == "other":
        return f"not a regular file {name!r} (link or device)"
    return None


def record_path(dest, archive):
    return os.path.join(dest, ".extracted", os.path.basename(archive) + ".json")


def _fingerprint(archive):
    st = os.stat(archive)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def already_done(archive, dest):
    try:
        with open(record_path(dest, archive), encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return False
    if record.get("archive") != _fingerprint(archive):
        return False
    return all(os.path.isfile(os.path.join(dest, m)) for m in record["members"])


def extract_one(archive, dest):
    """Extract ``archive`` into ``dest``; returns the member names written."""
    written = []
    try:
        with members(archive) as listing:
            for member in listing:
                why = unsafe_reason(member)
                if why:
                    raise ArchiveError(f"refused member: {why}; the archive may be tampered with")
                if member.kind == "dir":
                    continue
                target = os.path.join(dest, member.name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                tmp = f"{target}.part"
                try:
                    with member.open() as src, open(tmp, "wb") as out:
                        while chunk := src.read(1 << 20):
                            out.write(chunk)
                except BaseException:
                    if os.path.exists(tmp):
                        os.remove(tmp)  # a .part file is never taken for an image, but it takes space
                    raise
                os.replace(tmp, target)
                written.append(member.name)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):  # our disk, not the archive
            raise ArchiveError(f"no space left on the device of {dest} ({err.strerror}) after {len(written)} "
                               f"files: free space and run extract_images.sh again") from None
        raise ArchiveError(f"truncated or corrupt ({type(err).__name__}: {err}); "
                           f"{len(written)} files came out before the error; download it again") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise ArchiveError(f"truncated or corrupt ({type(err).__name__}: {err}); "
                           f"{len(written)} files came out before the error; download it again") from None
    return written


def _job(args):
    archive, dest = args
    name = os.path.basename(archive)
    if already_done(archive, dest):
        return name, "skipped", None
    try:
        members = extract_one(archive, dest)
    except ArchiveError as err:
        return name, "failed", str(err)
    os.makedirs(os.path.dirname(record_path(dest, archive)), exist_ok=True)
    write_json(record_path(dest, archive), {"archive": _fingerprint(archive), "members": members})
    return name, "extracted", len(members)


def extract_all(archives, dest, jobs):
    """Returns {"extracted": [...], "skipped": [...], "failed": {name: reason}}."""
    result = {"extracted": [], "skipped": [], "failed": {}}
    work = [(a, dest) for a in archives]
    with multiprocessing.get_context("fork").Pool(max(1, min(jobs, len(work)))) as pool:
        for i, (name, status, info) in enumerate(pool.imap_unordered(_job, work), 1):
            if status == "failed":
                result["failed"][name] = info
                log.error("[%d/%d] %s: %s", i, len(work), name, info)
            else:
                result[status].append(name)
                log.info("[%d/%d] %s: %s", i, len(work), name,
                         f"{info} files" if status == "extracted" else "already extracted, skipped")
    return result


def expected_archives(dataset):
    """The archive names a complete download of ``dataset`` holds."""
    if dataset == "chestxray14":
        from dataprep.chestxray14 import facts
        return [a.name for a in facts.ARCHIVES]
    from dataprep.kvasir_seg import facts
    return [facts.ZIP_NAME]


def absent(folder, names):
    """{why: [name, ...]} of the ``names`` not in ``folder``: an unfinished download or none at all."""
    groups = {}
    for name in names:
        if not os.path.isfile(os.path.join(folder, name)):
            part = os.path.isfile(os.path.join(folder, name + ".part"))
            groups.setdefault("unfinished download (.part left)" if part else "not downloaded", []).append(name)
    return groups


def describe(groups):
    return "; ".join(f"{why}: {', '.join(names)}" for why, names in groups.items())


def check_complete(archives_dir, dataset, allow_partial, found):
    """Refuse a download with archives missing, naming them, unless ``allow_partial`` and some are there."""
    expected = expected_archives(dataset)
    missing = absent(archives_dir, expected)
    if not missing:
        return
    count = f"{sum(map(len, missing.values()))} of {len(expected)} archives missing in {archives_dir}"
    if not allow_partial or not found:
        subset = ", or pass --allow-partial to extract only those present" if found else ""
        raise UserError(f"{count}: {describe(missing)}; run download_dataset.sh again to finish{subset}")
    log.warning("--allow-partial: %s (%s); extracting the others", count, describe(missing))


def build_parser():
    p = flags.Parser(description="Extract every tar.gz or zip archive of a folder safely.")
    p.add_argument("--archives-dir", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--pattern", default="*.tar.gz", help="which archives: *.tar.gz (default) or *.zip")
    p.add_argument("--jobs", type=flags.bounded(int, least=1, most=1024), default=os.cpu_count() or 1)
    p.add_argument("--expect", choices=["chestxray14", "kvasir-seg"],
                   help="refuse to start while an archive of this data set's download is missing")
    p.add_argument("--allow-partial", action="store_true",
                   help="with --expect: extract the archives present although others are missing")
    return p


@main_guard
def main(argv=None):
    args = build_parser().parse_args(argv)
    setup_logging(rank=0)
    archives = sorted(glob.glob(os.path.join(args.archives_dir, args.pattern)))
    if args.expect:
        check_complete(args.archives_dir, args.expect, args.allow_partial, archives)
    if not archives:
        raise UserError(f"no {args.pattern} archives in {args.archives_dir}: run download_dataset.sh first")
    result = extract_all(archives, args.dest, args.jobs)
    log.info("%d extracted, %d already done, %d failed, into %s", len(result["extracted"]),
             len(result["skipped"]), len(result["failed"]), args.dest)
    if result["failed"]:
        print(f"error: {len(result['failed'])} archive(s) failed: {', '.join(sorted(result['failed']))}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
