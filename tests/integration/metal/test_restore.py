"""The whole-host restore of side_effect.yml: the homes disk was lost after a backup, a fresh volume was made and
every home restored from the snapshot (docs/operations.md, "A lost homes disk"). This runs after the reboot."""

HOMES = "/srv/metalab/homes"


def _lines(host, path):
    return host.check_output(f"cat {path}").splitlines()


def test_the_homes_volume_is_a_new_filesystem(host):
    # The disk really was replaced: not the filesystem the first converge made, and fstab names the new one.
    lost = host.check_output("cat /root/homes-uuid.before")
    mounted = host.check_output(f"findmnt -n -o UUID {HOMES}")
    assert mounted and mounted != lost
    fstab = host.file("/etc/fstab").content_string
    assert f"UUID={mounted} {HOMES} " in fstab and f"UUID={lost}" not in fstab
    assert host.check_output(f"findmnt -n -o SOURCE {HOMES}") == "/dev/nvme0n1"


def test_every_entry_of_every_home_is_back_with_owner_mode_and_content(host):
    before = _lines(host, "/root/homes-manifest.before")
    after = _lines(host, "/root/homes-manifest.after")
    # The manifest: path|uid|gid|mode|type|link target|link count, then sizes, then sha256 of every file.
    assert len(before) > 200 * 3, "the fixture tree was written"
    assert any(line.startswith("./alice/project/first.csv|") and "|l|data/part-1.csv|" in line for line in before)
    missing = sorted(set(before) - set(after))
    extra = sorted(set(after) - set(before))
    assert (missing, extra) == ([], [])


def test_the_restored_files_are_the_ones_on_disk_now(host):
    # The after-manifest was taken before the reboot; the files read now, from the remounted volume, match it.
    for name in ("alice", "bob", "carol"):
        expected = host.check_output(f"cat /root/before-reboot.{name}")
        assert host.check_output(f"sha256sum {HOMES}/{name}/before-reboot.bin").split()[0] == expected


def test_the_hard_link_is_still_one_file(host):
    first = host.file(f"{HOMES}/alice/project/data/part-2.csv")
    second = host.file(f"{HOMES}/alice/project/notes/same-as-part-2.csv")
    assert host.check_output(f"stat -c %i {first.path}") == host.check_output(f"stat -c %i {second.path}")


def test_the_private_file_stays_private_to_its_owner(host):
    private = host.file(f"{HOMES}/alice/project/notes/private.txt")
    assert (private.user, private.mode) == ("lab-alice", 0o600)
    assert host.run(f"runuser -u lab-bob -- cat {private.path}").rc != 0
    assert host.run(f"runuser -u lab-alice -- cat {private.path}").stdout == "secret\n"


def test_the_restored_user_works_under_her_quota(host):
    # Quotas were applied to the restored homes: alice writes until her hard limit, as before the loss.
    result = host.run(f"runuser -u lab-alice -- dd if=/dev/zero of={HOMES}/alice/fill bs=1M count=200")
    try:
        assert "Disk quota exceeded" in result.stderr
    finally:
        host.run(f"rm -f {HOMES}/alice/fill")
    assert host.run(f"runuser -u lab-alice -- sh -c 'echo ok > {HOMES}/alice/after-restore.txt'").rc == 0
    host.run(f"rm -f {HOMES}/alice/after-restore.txt")
