# Run as root on the old host by tests/sandbox/test_move.py: alice's home (a few thousand files, a sparse file, a
# symlink, a hard link, an ACL, an xattr) and two ended runtimes of hers in the guard ledger.
import os
import pwd
import subprocess
import sys
import time

sys.path.insert(0, "/usr/local/lib/metalab")
from metalab.host.guard.ledger import Ledger  # noqa: E402 - the lab host's copy (session_limits role)

home, login = sys.argv[1], sys.argv[2]
pw = pwd.getpwnam(login)
for d in range(30):
    os.makedirs(f"{home}/data/d{d:02}", exist_ok=True)
    for f in range(100):
        with open(f"{home}/data/d{d:02}/f{f:03}.txt", "w") as out:
            out.write(f"{d} {f} " * (f + 1))
with open(f"{home}/sparse.img", "wb") as out:
    out.seek(64 << 20)
    out.write(b"end")
with open(f"{home}/notes.md", "w") as out:
    out.write("# notes\n")
os.symlink("notes.md", f"{home}/link-to-notes")
os.link(f"{home}/notes.md", f"{home}/hardlink-to-notes")
os.setxattr(f"{home}/notes.md", "user.origin", b"mv1")
subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", home], check=True)
subprocess.run(["setfacl", "-m", "u:nobody:r", f"{home}/notes.md"], check=True)
os.chmod(f"{home}/data/d00", 0o750)

ledger = Ledger("/var/lib/metalab/guard/ledger.sqlite")
now = time.time()
with ledger.transaction() as cur:
    for i, hours in enumerate((1.0, 0.5)):
        start = now - 7200 * (i + 1)
        cur.execute(
            "INSERT INTO runtimes (user, host, kind, gpu, container, state, started, ended, end_reason)"
            " VALUES ('alice', 'mv1', 'cpu', NULL, ?, 'ended', ?, ?, 'user')",
            (f"metalab-alice-{i}", start, start + hours * 3600),
        )
        cur.execute(
            "INSERT INTO events (ts, runtime_id, user, action, actor) VALUES (?, ?, 'alice', 'ended', 'test')",
            (start, cur.lastrowid),
        )
ledger.close()
