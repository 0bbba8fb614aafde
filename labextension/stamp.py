"""Write the hash of the extension's sources next to its build (`npm run build` calls this), so a
test can tell a committed build that no longer matches its sources (tests/test_jupyter_ext_install.py)."""

import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("package.json", "package-lock.json", "tsconfig.json", "src", "style")
STAMP = os.path.join(HERE, "..", "gemma_ft_widgets", "labextension", "source.sha256")


def source_hash(root: str = HERE) -> str:
    h = hashlib.sha256()
    for top in SOURCES:
        path = os.path.join(root, top)
        files = [path] if os.path.isfile(path) else sorted(
            os.path.join(d, n) for d, _, names in os.walk(path) for n in names)
        for f in files:
            h.update(os.path.relpath(f, root).encode() + b"\0")
            with open(f, "rb") as fh:
                h.update(fh.read() + b"\0")
    return h.hexdigest()


if __name__ == "__main__":
    with open(STAMP, "w") as f:
        f.write(source_hash() + "\n")
    sys.exit(0)
