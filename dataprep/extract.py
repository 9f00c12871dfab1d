"""Extract tar.gz archives safely, in parallel, idempotently.

    python -m dataprep.extract --archives-dir data/chestxray14 --dest data/chestxray14/images_all --jobs 2

For each ``*.tar.gz`` in the folder: refuse members with an absolute path, a
``..`` component or a non-regular type (link, device); write every file via a
temporary name; compare the count written with the archive's own listing;
record ``<dest>/.extracted/<archive>.json`` (archive size and mtime, member
count). A rerun skips archives whose record matches and whose files are all
present. A truncated or corrupt archive is named, the others carry on, and the
exit status is 1 at the end.
"""
import argparse
import glob
import json
import logging
import multiprocessing
import os
import sys
import tarfile
import zlib

from runtime.files import write_json
from runtime.logs import setup_logging

log = logging.getLogger("extract")


class ArchiveError(Exception):
    pass


def unsafe_reason(member):
    """Why ``member`` must not be extracted, or None."""
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        return f"absolute path {name!r}"
    if ".." in name.replace("\\", "/").split("/"):
        return f"path with '..' {name!r}"
    if not (member.isfile() or member.isdir()):
        return f"not a regular file {name!r} (link or device)"
    return None


def _record_path(dest, archive):
    return os.path.join(dest, ".extracted", os.path.basename(archive) + ".json")


def _fingerprint(archive):
    st = os.stat(archive)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def already_done(archive, dest):
    try:
        with open(_record_path(dest, archive), encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return False
    if record.get("archive") != _fingerprint(archive):
        return False
    return all(os.path.isfile(os.path.join(dest, m)) for m in record["members"])


def extract_one(archive, dest):
    """Extract ``archive`` into ``dest``; returns the member names written."""
    written, listed = [], 0
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                why = unsafe_reason(member)
                if why:
                    raise ArchiveError(f"refused member: {why}; the archive may be tampered with")
                if member.isdir():
                    continue
                listed += 1
                target = os.path.join(dest, member.name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                tmp = f"{target}.part"
                with tar.extractfile(member) as src, open(tmp, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                os.replace(tmp, target)
                written.append(member.name)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise ArchiveError(f"truncated or corrupt ({type(err).__name__}: {err}); "
                           f"{len(written)} files came out before the error; download it again") from None
    if len(written) != listed:
        raise ArchiveError(f"wrote {len(written)} files but the archive lists {listed}")
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
    os.makedirs(os.path.dirname(_record_path(dest, archive)), exist_ok=True)
    write_json(_record_path(dest, archive), {"archive": _fingerprint(archive), "members": members})
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


def main(argv=None):
    parser = argparse.ArgumentParser(description="Extract every *.tar.gz of a folder safely.")
    parser.add_argument("--archives-dir", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    setup_logging(rank=0)
    archives = sorted(glob.glob(os.path.join(args.archives_dir, "*.tar.gz")))
    if not archives:
        print(f"error: no *.tar.gz archives in {args.archives_dir}: run download_dataset.sh first",
              file=sys.stderr)
        sys.exit(2)
    result = extract_all(archives, args.dest, args.jobs)
    log.info("%d extracted, %d already done, %d failed, into %s", len(result["extracted"]),
             len(result["skipped"]), len(result["failed"]), args.dest)
    if result["failed"]:
        print(f"error: {len(result['failed'])} archive(s) failed: {', '.join(sorted(result['failed']))}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
