"""--verify with the real command, real rsync and a real sshd: what differs is listed,
nothing is ever written, exit 0/1/2 as documented."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    RSYNC,
    free_port,
    inosync_argv,
    wait_converged,
    wait_until,
    write_config,
)

from inosync import verify as verification
from inosync.config import load

pytestmark = pytest.mark.slow  # end to end: real processes


def run(conf: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*inosync_argv(), "-c", str(conf), *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def nodes_part(out: str) -> str:
    """stdout after the summary line (tests/test_verify_summary.py): the node lines."""
    summary, _, rest = out.partition("\n")
    assert re.match(r"(OK|CRITICAL|UNKNOWN): .* \| nodes=", summary), summary
    return rest


def mirror(src: Path, node: Path) -> None:
    """Make node equal to src, as a full sync would."""
    # --modify-window=-1 as inosync's runs: else rsync leaves directory times
    # that are within the same second as they are
    subprocess.run([RSYNC, "-a", "--delete", "--modify-window=-1", f"{src}/", f"{node}/"],
                   check=True)


def same_dir_times(src: Path, node: Path) -> None:
    """Give node's directories the mtimes of src's: tampering with a node changes
    them, and a test about files must not also see directory times."""
    top = os.fsencode(src)
    for d, _, _ in os.walk(top):
        there = os.path.join(os.fsencode(node), os.path.relpath(d, top))
        if os.path.isdir(there):
            st = os.stat(d)
            os.utime(there, ns=(st.st_atime_ns, st.st_mtime_ns))


def snapshot(top: Path) -> dict[bytes, tuple[int, int, int, str]]:
    """Every entry below top, and top: mode, size, mtime, content hash of files."""
    out = {}
    root = os.fsencode(top)
    for path in [root, *(os.path.join(d, n) for d, dirs, files in os.walk(root)
                         for n in dirs + files)]:
        st = os.lstat(path)
        digest = ""
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        out[path] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def config_for(tmp_path: Path, src: Path, nodes: list[str], **settings: object) -> Path:
    return write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=nodes, **settings)


@pytest.mark.parametrize("rsync_args", [[], ["-vv", "--stats", "--out-format=%n"]])
def test_identical_nodes_exit_0(tree, tmp_path, rsync_args):
    src, nodes = tree["src"], tree["nodes"]
    for node in nodes:
        mirror(src, node)
    conf = config_for(tmp_path, src, [str(n) for n in nodes], rsync_args=rsync_args)
    done = run(conf, "--verify")
    assert (done.returncode, done.stderr) == (0, "")
    # -vv lists unchanged items and totals too: none of that is drift
    assert nodes_part(done.stdout).splitlines() == [f"{n}: identical" for n in nodes]


def test_drifted_node_exit_1_lists_the_paths_and_stays_as_it_was(tree, tmp_path):
    src, (clean, drifted) = tree["src"], tree["nodes"]
    mirror(src, clean)
    mirror(src, drifted)
    (drifted / "index.html").write_text("<h1>changed by hand</h1>\n")  # file changed
    (drifted / "docs" / "a.txt").unlink()  # file missing
    (drifted / "docs" / "extra").write_text("left over\n")  # extra file
    (drifted / "docs" / "old" / "b.txt").chmod(0o600)  # mode change
    same_dir_times(src, drifted)
    before = {p: snapshot(p) for p in (src, clean, drifted)}
    done = run(config_for(tmp_path, src, [str(clean), str(drifted)]), "--verify")
    assert done.returncode == 1, done.stderr
    first, second = nodes_part(done.stdout).splitlines()
    assert first == f"{clean}: identical"
    assert second.startswith(f"{drifted}: 4 paths differ (e.g. ")
    items = re.findall(r"(\S+) (\S+)(?:, |\)$)", second.split("(e.g. ", 1)[1])
    assert sorted(items) == sorted([
        (">f.st......", "index.html"), (">f+++++++++", "docs/a.txt"),
        ("*deleting", "docs/extra"), (".f...p.....", "docs/old/b.txt")])
    assert before == {p: snapshot(p) for p in before}  # nothing written anywhere


def test_directory_mtime_counts_as_drift(tree, tmp_path):
    src, node = tree["src"], tree["nodes"][0]
    mirror(src, node)
    os.utime(node / "docs", (1_000_000_000, 1_000_000_000))
    done = run(config_for(tmp_path, src, [str(node)]), "--verify")
    assert done.returncode == 1
    assert nodes_part(done.stdout) == (f"{node}: 1 path differs; 1 only in directory mtime "
                           "(e.g. .d..t...... docs/)\n")


def test_checksum_catches_what_size_and_mtime_miss(tree, tmp_path):
    src, node = tree["src"], tree["nodes"][0]
    mirror(src, node)
    target = node / "docs" / "a.txt"
    target.write_text("b\n")  # same size as the source's "a\n"
    st = os.stat(src / "docs" / "a.txt")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    same_dir_times(src, node)
    conf = config_for(tmp_path, src, [str(node)])
    plain = run(conf, "--verify")
    assert (plain.returncode, nodes_part(plain.stdout)) == (0, f"{node}: identical\n")
    summed = run(conf, "--verify", "--checksum")
    assert summed.returncode == 1
    assert nodes_part(summed.stdout) == f"{node}: 1 path differs (e.g. >fc........ docs/a.txt)\n"
    assert target.read_text() == "b\n"  # still the node's own content


def test_excluded_paths_are_not_reported(tree, tmp_path):
    src, node = tree["src"], tree["nodes"][0]
    (src / "only-here.tmp").write_text("excluded on the source\n")
    mirror(src, node)
    (node / "only-here.tmp").unlink()
    (node / "junk.tmp").write_text("excluded, only on the node\n")
    (node / "cache").mkdir()
    (node / "cache" / "page").write_text("excluded directory\n")
    same_dir_times(src, node)
    conf = config_for(tmp_path, src, [str(node)], rexcludes=["*.tmp", "/cache/"])
    done = run(conf, "--verify")
    assert (done.returncode, nodes_part(done.stdout)) == (0, f"{node}: identical\n")
    (node / "docs" / "stray").write_text("not excluded\n")  # one that is not
    same_dir_times(src, node)
    done = run(conf, "--verify")
    assert done.returncode == 1
    assert nodes_part(done.stdout) == f"{node}: 1 path differs (e.g. *deleting docs/stray)\n"
    assert (node / "junk.tmp").exists() and (node / "cache" / "page").exists()


def test_odd_names(tree, tmp_path):
    src, node = tree["src"], tree["nodes"][0]
    mirror(src, node)
    missing = [b"new\nline", b"with space", b"tab\tname"]
    extra = [b"bad\xff\xfeutf8", b"back\\#123"]
    for name in missing:
        with open(os.path.join(os.fsencode(src), b"docs", name), "wb") as f:
            f.write(name)
    for name in extra:
        with open(os.path.join(os.fsencode(node), b"docs", name), "wb") as f:
            f.write(name)
    same_dir_times(src, node)
    conf = config_for(tmp_path, src, [str(node)])
    done = run(conf, "--verify")
    assert done.returncode == 1
    assert len(done.stdout.splitlines()) == 2  # a newline in a name ends no line
    for shown in ("docs/new\\#012line", "docs/with space", "docs/tab\\#011name",
                  "docs/bad\\#377\\#376utf8", "docs/back\\#134#123"):
        assert shown in done.stdout
    # the parser gives back the names themselves, byte for byte
    (result,) = verification.verify(load(str(conf)))
    assert result.drift is not None and result.drift.count == 5
    assert sorted(name for _, name in result.drift.sample) == sorted(
        b"docs/" + n for n in missing + extra)


def test_ssh_nodes(tree, tmp_path, sshd):
    src, local = tree["src"], tree["nodes"][0]
    remote = tmp_path / "remote"
    remote.mkdir()
    mirror(src, local)
    mirror(src, remote)
    nodes = [str(local), f"root@127.0.0.1:{remote}"]
    conf = config_for(tmp_path, src, nodes, ssh=sshd.ssh_command())
    done = run(conf, "--verify")
    assert (done.returncode, nodes_part(done.stdout)) == (
        0, "".join(f"{n}: identical\n" for n in nodes))
    (remote / "index.html").unlink()
    same_dir_times(src, remote)
    done = run(conf, "--verify")
    assert done.returncode == 1
    assert done.stdout.splitlines()[2] == (f"{nodes[1]}: 1 path differs "
                                           "(e.g. <f+++++++++ index.html)")  # "<": sent to a remote
    assert not (remote / "index.html").exists()


def test_unreachable_ssh_node_exit_2_and_error_wins(tree, tmp_path, sshd):
    src, local = tree["src"], tree["nodes"][0]
    mirror(src, local)
    ssh = sshd.ssh_command()
    ssh[ssh.index("-p") + 1] = str(free_port())  # nothing listens there
    nodes = [str(local), f"root@127.0.0.1:{tmp_path / 'remote'}"]
    conf = config_for(tmp_path, src, nodes, ssh=ssh)
    done = run(conf, "--verify")
    assert done.returncode == 2
    first, second = nodes_part(done.stdout).splitlines()
    assert first == f"{local}: identical"
    # rsync exits 255 or 12 (protocol data stream), whichever it sees first
    assert re.match(re.escape(f"{nodes[1]}: error: rsync exit ") + r"(255|12) \(", second)
    assert second.endswith("Connection refused")  # ssh's own message, the first it wrote
    (local / "index.html").unlink()  # drift on one node, an error on the other
    assert run(conf, "--verify").returncode == 2


def test_silent_node_times_out_with_the_config_timeout(tree, tmp_path):
    """A node that accepts the connection and then says nothing: rsync's --timeout
    (the config's timeout) ends its check, an error."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(5)  # the kernel accepts; nobody ever answers
        ssh = ["ssh", "-p", str(hole.getsockname()[1]), "-o", "BatchMode=yes"]
        conf = config_for(tmp_path, tree["src"], ["root@127.0.0.1:/srv/x"], ssh=ssh,
                          timeout=2)
        started = time.monotonic()
        done = run(conf, "--verify")
    assert time.monotonic() - started < 30
    assert done.returncode == 2
    assert "error: rsync exit 30 (timeout in data send/receive)" in done.stdout


def test_stopped_verify_exits_2_and_leaves_no_child(tree, tmp_path):
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(5)
        port = str(hole.getsockname()[1])
        conf = config_for(tmp_path, tree["src"], ["root@127.0.0.1:/srv/x"],
                          ssh=["ssh", "-p", port, "-o", "BatchMode=yes"])
        proc = subprocess.Popen([*inosync_argv(), "-c", str(conf), "--verify"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: children_with(port), 20, "rsync and ssh to start")
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 2
    assert "stopped by SIGTERM" in err and len(err.strip().splitlines()) == 1
    wait_until(lambda: not children_with(port), 10, "rsync and ssh to exit")


def children_with(word: str) -> list[int]:
    """Processes whose command line holds word (as one of its words or inside one)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(word.encode() in w for w in words) and b"--verify" not in words:
            found.append(int(cmdline.parent.name))
    return found


def test_verify_beside_a_running_daemon(tree, tmp_path, run_inosync):
    src, nodes = tree["src"], tree["nodes"]
    pidfile = tmp_path / "inosync.pid"
    conf = config_for(tmp_path, src, [str(n) for n in nodes], edelay=0.2, pidfile=str(pidfile))
    d = run_inosync(conf)
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, "pidfile")
    wait_converged(src, nodes)
    held = pidfile.read_text()
    done = run(conf, "--verify")
    assert (done.returncode, nodes_part(done.stdout)) == (
        0, "".join(f"{n}: identical\n" for n in nodes))
    (src / "new.txt").write_text("new\n")
    wait_converged(src, nodes)
    assert run(conf, "--verify", "--checksum").returncode == 0
    assert pidfile.read_text() == held and d.proc.poll() is None  # the daemon never noticed
    assert d.stop() == 0


@pytest.mark.parametrize("args", [("--verify", "--check"), ("--verify", "-d"),
                                  ("--verify", "-p"), ("--check", "-d"), ("--checksum",)])
def test_usage_errors(tree, tmp_path, args):
    node = tree["nodes"][0]
    conf = config_for(tmp_path, tree["src"], [str(node)])
    done = run(conf, *args)
    assert done.returncode == 2
    assert "usage:" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == "" and not any(node.iterdir())


@pytest.mark.parametrize(("rsync_args", "why"), [
    (["--link-dest=/srv/old"], "not on inosync's list of rsync options known to be safe"),
    (["-aI"], "lists every file as different"), (["--ignore-times"], "every file")])
def test_rsync_args_that_make_the_list_lie_are_refused(tree, tmp_path, rsync_args, why):
    conf = config_for(tmp_path, tree["src"], [str(tree["nodes"][0])], rsync_args=rsync_args)
    done = run(conf, "--verify")
    assert done.returncode == 2 and done.stdout == "" and why in done.stderr, done.stderr


def test_hard_links_already_right_are_no_drift(tree, tmp_path):
    """-H with -vv: rsync lists a hard link that is already right as "hf" with blanks."""
    src, node = tree["src"], tree["nodes"][0]
    os.link(src / "index.html", src / "docs" / "index-link.html")
    subprocess.run([RSYNC, "-aH", "--delete", "--modify-window=-1", f"{src}/", f"{node}/"],
                   check=True)
    conf = config_for(tmp_path, src, [str(node)], rsync_args=["-H", "-vv"])
    done = run(conf, "--verify")
    assert (done.returncode, nodes_part(done.stdout)) == (0, f"{node}: identical\n"), done.stdout


def test_a_log_file_in_rsync_args_gets_nothing_from_verify(tree, tmp_path):
    """--log-file is off the allowlist (issue 16): refused before anything runs."""
    src, node = tree["src"], tree["nodes"][0]
    mirror(src, node)
    logfile = tmp_path / "rsync.log"
    conf = config_for(tmp_path, src, [str(node)], rsync_args=[f"--log-file={logfile}"])
    assert run(conf, "--verify").returncode == 2
    assert not logfile.exists()


def test_quiet_rsync_args_refused(tree, tmp_path):
    conf = config_for(tmp_path, tree["src"], [str(tree["nodes"][0])], rsync_args=["-vq"])
    done = run(conf, "--verify")
    assert done.returncode == 2 and done.stdout == ""
    assert "rsync_args holds '-vq'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("option", ["--check", "--verify"])
def test_a_reader_that_goes_away_is_no_error(tree, tmp_path, option):
    """Issue 17.4: `inosync --check | true` printed a BrokenPipeError traceback, and
    `--verify | true` exited 1 though every node was identical."""
    src, nodes = tree["src"], tree["nodes"]
    for node in nodes:
        mirror(src, node)
    conf = config_for(tmp_path, src, [str(n) for n in nodes])
    proc = subprocess.Popen([*inosync_argv(), "-c", str(conf), option],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# ---- issue 17.3: the first line is a Nagios plugin's status line; --nagios exits 0/2/3

PERF_OK2 = "nodes=2;;;0 identical=2;;;0;2 differ=0;;0;0;2 unknown=0;;;0;2 paths_differ=0;;0;0"


def test_first_line_ok_exit_0_with_and_without_nagios(tree, tmp_path):
    src, nodes = tree["src"], tree["nodes"]
    for node in nodes:
        mirror(src, node)
    conf = config_for(tmp_path, src, [str(n) for n in nodes])
    for args, code in [((), 0), (("--nagios",), 0)]:
        done = run(conf, "--verify", *args)
        assert (done.returncode, done.stderr) == (code, "")
        assert done.stdout.splitlines() == [f"OK: 2 nodes identical | {PERF_OK2}",
                                            *(f"{n}: identical" for n in nodes)]


def test_first_line_critical_exit_1_or_2_with_nagios(tree, tmp_path):
    src, (clean, drifted) = tree["src"], tree["nodes"]
    mirror(src, clean)
    mirror(src, drifted)
    (drifted / "index.html").unlink()
    (drifted / "docs" / "extra").write_text("left over\n")
    same_dir_times(src, drifted)
    conf = config_for(tmp_path, src, [str(clean), str(drifted)])
    for args, code in [((), 1), (("--nagios",), 2)]:
        done = run(conf, "--verify", *args)
        assert done.returncode == code, done.stderr
        summary, first, second = done.stdout.splitlines()
        assert summary == (f"CRITICAL: 1 of 2 nodes differ (node {drifted}: 2 paths) | "
                           "nodes=2;;;0 identical=1;;;0;2 differ=1;;0;0;2 unknown=0;;;0;2 "
                           "paths_differ=2;;0;0")
        assert first == f"{clean}: identical" and second.startswith(f"{drifted}: 2 paths differ")


def test_first_line_unknown_for_an_unreachable_node_exit_2_or_3_with_nagios(tree, tmp_path):
    src, local = tree["src"], tree["nodes"][0]
    mirror(src, local)
    remote = f"root@127.0.0.1:{tmp_path / 'remote'}"
    ssh = ["ssh", "-p", str(free_port()), "-o", "BatchMode=yes"]  # nothing listens there
    conf = config_for(tmp_path, src, [str(local), remote], ssh=ssh)
    for args, code in [((), 2), (("--nagios",), 3)]:
        done = run(conf, "--verify", *args)
        assert done.returncode == code, done.stderr
        summary, first, second = done.stdout.splitlines()
        # rsync exits 255 or 12 (protocol data stream), whichever it sees first
        assert re.fullmatch(re.escape(f"UNKNOWN: 1 of 2 nodes not checked (node {remote}: "
                                      "rsync exit ") + r"(255|12) \([a-z ]+\)\) \| "
                            + re.escape("nodes=2;;;0 identical=1;;;0;2 differ=0;;0;0;2 "
                                        "unknown=1;;;0;2 paths_differ=0;;0;0"), summary), summary
        assert first == f"{local}: identical" and second.startswith(f"{remote}: error: rsync")
    # a known difference beside it: CRITICAL under --nagios; 2 (an error wins) without
    (local / "index.html").unlink()
    same_dir_times(src, local)
    done = run(conf, "--verify", "--nagios")
    assert done.returncode == 2
    assert done.stdout.startswith(f"CRITICAL: 1 of 2 nodes differ (node {local}: 1 path); "
                                  f"1 not checked (node {remote}: rsync exit ")
    assert run(conf, "--verify").returncode == 2


def test_nagios_a_configuration_error_is_unknown_on_stdout_exit_3(tree, tmp_path):
    conf = tmp_path / "inosync.conf"
    conf.write_text(f"wpath = {str(tree['src'])!r}\nrnodes = ['/srv/x'\n")  # unclosed
    conf.chmod(0o644)
    done = run(conf, "--verify", "--nagios")
    assert (done.returncode, done.stderr) == (3, "")
    assert re.fullmatch(re.escape(f"UNKNOWN: {conf}:") + r"\d+: .*\n", done.stdout), done.stdout
    plain = run(conf, "--verify")  # without --nagios: as ever, stderr and exit 2
    assert (plain.returncode, plain.stdout) == (2, "")
    assert plain.stderr.strip().endswith(done.stdout[len("UNKNOWN: "):].strip())
    # a refusal after loading (here -q in rsync_args) and a usage error too
    quiet = config_for(tmp_path, tree["src"], [str(tree["nodes"][0])], rsync_args=["-q"])
    done = run(quiet, "--verify", "--nagios")
    assert (done.returncode, done.stderr) == (3, "")
    assert re.match(re.escape(f"UNKNOWN: {quiet}:") + r"\d+: rsync_args holds '-q'",
                    done.stdout), done.stdout
    done = run(quiet, "--verify", "--nagios", "-d")
    assert (done.returncode, done.stderr) == (3, "")
    assert done.stdout.startswith("UNKNOWN: usage: --verify runs once in the foreground")


@pytest.mark.parametrize("args", [("--nagios",), ("--check", "--nagios")])
def test_nagios_without_verify_is_a_usage_error(tree, tmp_path, args):
    conf = config_for(tmp_path, tree["src"], [str(tree["nodes"][0])])
    done = run(conf, *args)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.strip().endswith("usage: --nagios goes with --verify only")
