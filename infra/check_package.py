"""Checks that each Lambda zip holds an executable `bootstrap` built for Linux,
and that serve's links no S3 or SQS code (the planner's and ingest's do, so
the check can tell)."""
import stat
import sys
import zipfile

failed = False
for path in sys.argv[1:]:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        info = z.getinfo("bootstrap") if "bootstrap" in names else None
        mode = (info.external_attr >> 16) if info else 0
        head = z.read("bootstrap")[:4] if info else b""
        ok = info is not None and mode & stat.S_IXUSR and head == b"\x7fELF"
        if ok:
            data = z.read("bootstrap")
            links_s3 = b"aws_sdk_s3" in data or b"aws_sdk_sqs" in data
            if "/serve/" in path and links_s3:
                print(f"{path}: serve links the S3/SQS SDKs")
                ok = False
            if "/ingest/" in path and not links_s3:
                print(f"{path}: no S3 SDK found in ingest, so the check on serve tells nothing")
                ok = False
        print(f"{path}: {'ok' if ok else 'BAD'} (entries {names}, mode {oct(mode)}, {info.file_size if info else 0} bytes)")
        failed |= not ok
print(f"package: {len(sys.argv) - 1 - int(failed)} passed, {int(failed)} failed")
sys.exit(1 if failed else 0)
