"""Replaying renames on a node before its rsync run, so moved data is not sent again.

A batch's renames (old path, new path, in the order they happened) are
replayed on the node by one small program, then the batch's rsync runs
over the old and the new paths, comparing file contents (``--checksum``):
rsync stays the source of truth, and the replay is only a shortcut that
can never leave a file holding other data than the source's, whatever the
node held or however the replay went. The rules that make it so:

* A batch's renames are replayed at most once: a batch that failed goes
  back to the queue with its paths only, and every rename collected for
  that node meanwhile is dropped too (they assumed the failed batch was
  through). A retry of a replayed batch still compares contents.
* A rename of a directory under which an exclude rule could match is not
  replayed (it would carry node-local, excluded data away from where the
  exclude protects it: ``rexcludes = ['/site/uploads']`` and ``mv site
  site.old``); a name-only rule (``*.swp``, ``config.local.php``) matches
  under every directory, so it turns directory renames off. Files are
  always replayed.
* On the node, each step is taken from a directory handle opened from the
  node's root down without following any symlink (``openat`` with
  ``O_NOFOLLOW``, ``renameat2``, ``mkdirat``): a user on the node who swaps
  a directory for a symlink cannot make the replay write anywhere else. The
  node's directory itself is opened from ``/`` the same way, one name at a
  time; a symlink on the way (or on the way of one it leads to) is followed
  only if it is root's or ours and no one else may change a directory above
  it, as rsync 3.5 does (``/var/run -> /run`` is fine; a link another user
  owns turns the replay off for that node). A
  rename whose source is missing, of the wrong type, or that the kernel
  refuses is left to rsync, and so is every later rename that reads a name
  the skipped one should have filled.
* Missing parents of a new path are made (mode 0700) only when rsync sets
  permissions (``-p``, part of ``-a``): the batch lists the path below
  them, so rsync gives them the source's mode, owner and times. With
  ``--no-perms`` no parent is made.
* Any rsync option not known to leave the replay equivalent (``--max-delete``,
  ``--rsync-path``, ...: rsyncopts.TABLE says) turns it off.
* It runs under a time limit (the ``timeout`` setting); it cannot run
  without perl, or on a machine whose system call numbers it does not know:
  then rsync sends the data, and the log says so once.

The program is a constant Perl script (perl-base is Essential on Debian),
run as a child of the daemon for local nodes and through the configured
ssh command for ssh nodes. The node's directory and the names go as
NUL-separated data on its stdin, never into a command line; only the
constant script is quoted for the remote shell. rsync:// nodes have no
command channel: no replay there.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from collections.abc import Sequence, Set
from typing import NamedTuple

from . import deletepolicy, rsyncopts
from .excludes import Excludes
from .kept import touches
from .rsync import Kind, allowed, node_kind, options, ssh_host, ssh_parts


class Move(NamedTuple):
    """One rename inside wpath, as the watcher saw it."""

    old: str
    new: str
    is_dir: bool = False


VERSION = "inosync-replay-3"  # first field of the input: script and data must agree

# Exit statuses of the script (besides 0 and the shell's 127 for "no perl").
EXIT_UNSUPPORTED = 3  # cannot replay safely on this machine: never try again there
EXIT_BAD_INPUT = 4  # the data did not match the script: a bug, said loudly

# stdin: VERSION NUL root NUL make_parents NUL time_limit NUL (kind NUL old NUL new NUL)*
#   kind: "f" a non-directory moved, "d" a directory moved, "-" not to be
#   replayed (its names are only marked as not holding the source's data).
#   No renames at all: only wait for any earlier replay on the node to end.
# stdout: a byte before each rename (a closed connection ends it there);
# stderr: one summary line. Syscall numbers: openat, mkdirat, renameat2, close, readlinkat.
SCRIPT = r"""
use strict; use warnings; use Config; use Cwd ();
use Fcntl qw(:flock :mode O_RDONLY O_RDWR O_CREAT O_DIRECTORY O_NOFOLLOW);
my %nr = (x86_64 => [257, 258, 316, 3, 267], i386 => [295, 296, 353, 6, 305],
          arm => [322, 323, 382, 6, 332], generic => [56, 34, 276, 57, 78]);
my $arch = $Config{archname};
my $k = $^O ne 'linux' ? '' : $arch =~ /^x86_64-linux(?!-gnux32)/ && $Config{ptrsize} == 8
  ? 'x86_64' : $arch =~ /^i[3-6]86-linux/ ? 'i386' : $arch =~ /^arm[^-]*-linux/ ? 'arm'
  : $arch =~ /^(?:aarch64|riscv64|loongarch64)-linux/ ? 'generic' : '';
if (!$k) { print STDERR "cannot replay safely here: unknown system ($^O, $arch)\n"; exit 3; }
my ($OPENAT, $MKDIRAT, $RENAME, $CLOSE, $READLINKAT) = @{$nr{$k}};
my $PATH = 010000000; my $AT_CWD = -100;
local $/ = "\0";
my @f = <STDIN>; chomp @f;
if (@f < 4 || $f[0] ne 'inosync-replay-3' || (@f - 4) % 3) { print STDERR "bad input\n"; exit 4; }
my (undef, $root, $mkparents, $limit) = splice(@f, 0, 4);
alarm($limit) if $limit > 0;  # ends itself even where the daemon's kill cannot reach
$| = 1;
my ($done, $left, $why, @taint) = (0, 0, '');
my ($lock, $lockpath);
sub finish { unlink($lockpath) if defined $lockpath;  # then the lock goes with the handle
  print STDERR "renames replayed: $done, left to rsync: $left$why\n"; exit 0; }
if ($root =~ m{^~([^/]*)(/.*)?$}s) {  # what the remote shell makes of it for rsync
  my $home = $1 eq '' ? ($ENV{HOME} // (getpwuid($<))[7]) : (getpwnam($1))[7];
  if (!defined $home || $home eq '') { $left = @f / 3; $why = " (no home directory for ~$1)";
    finish(); }
  $root = $home . ($2 // '');
}
sub opn { my ($d, $n, $fl) = @_; return syscall($OPENAT, $d + 0, "$n", $fl + 0); }
sub cls { syscall($CLOSE, $_[0] + 0) if $_[0] >= 0; }
# Trusted like sshd's StrictModes: ours or root's, and (but for a symlink) not
# writable by group or others; no one else can swap it, move it or hold it open.
sub trusted { my @st = stat("/proc/self/fd/$_[0]");
  return @st && ($st[4] == 0 || $st[4] == $>) && (S_ISLNK($st[2]) || !($st[2] & 022)); }
# The node's directory, opened from / one name at a time as the kernel would,
# following a symlink only if it is ours or root's and no one else may change
# a directory above it (rsync 3.5 follows no other link either): no one else
# decides where the renames happen. -1 if it cannot be opened so.
sub sure_dir { my @st = stat("/proc/self/fd/$_[0]");
  return @st && ($st[4] == 0 || $st[4] == $>) && (!($st[2] & 022) || $st[2] & S_ISVTX); }
sub names { grep { $_ ne '' && $_ ne '.' } split m{/}, $_[0] }
sub open_root {
  my $path = shift;
  if ($path !~ m{^/}) { my $cwd = Cwd::getcwd() // return -1; $path = "$cwd/$path"; }
  my @todo = names($path);
  my $top = opn($AT_CWD, '/', $PATH | O_DIRECTORY); return -1 if $top < 0;
  my @up = ([$top, sure_dir($top)]);  # the directories on the way down, each with
  my ($links, $ok) = (0, 1);          # whether it and all above are sure
  while ($ok && @todo) {
    my $c = shift @todo;
    if ($c eq '..') { cls((pop @up)->[0]) if @up > 1; next; }
    my $next = opn($up[-1][0], $c, $PATH | O_NOFOLLOW);
    my @st = $next >= 0 ? stat("/proc/self/fd/$next") : ();
    if (@st && S_ISLNK($st[2])) {
      my ($to, $empty) = ("\0" x 4096, '');
      my $n = ($st[4] == 0 || $st[4] == $>) && $up[-1][1] && ++$links <= 40
        ? syscall($READLINKAT, $next + 0, $empty, $to, 4096) : -1;
      cls($next);
      if ($n < 0 || $n >= 4096) { $ok = 0; $why = " (untrusted: the node's directory is "
        . "reached through a symlink another user may change)"; next; }
      $to = substr($to, 0, $n);
      cls($_->[0]) for $to =~ m{^/} ? splice(@up, 1) : ();
      unshift @todo, names($to);
    } elsif (@st && S_ISDIR($st[2])) { push @up, [$next, $up[-1][1] && sure_dir($next)]; }
    else { cls($next); $ok = 0; }
  }
  my $fd = $ok ? opn($up[-1][0], '.', O_RDONLY | O_DIRECTORY) : -1;
  cls($_->[0]) for @up;
  return $fd;
}
my $rfd = open_root($root);
# The lock, held until the end: one replay at a time per node (a retry waits for
# one cut short). Its file lies in a directory of ours that no one else may write
# (root: /run/inosync.replay; another user: ~/.inosync-replay, by the password
# database), so no one else can open it, hold it, or put anything at its name.
# Not /run/inosync-replay: that is the RuntimeDirectory of inosync@replay.service
# (0755, so no lock of ours, and removed at its stop); no instance name makes a dot.
sub lock_dir {
  my $d = $> == 0 ? '/run/inosync.replay' : ((getpwuid($>))[7] // '') . '/.inosync-replay';
  mkdir($d, 0700);
  my @st = lstat($d);
  return @st && S_ISDIR($st[2]) && $st[4] == $> && !($st[2] & 077) ? $d : undef;
}
sub take_lock {
  my $d = lock_dir() // return 0;
  my @r = stat("/proc/self/fd/$rfd"); my $path = "$d/$r[0]-$r[1].lock";
  for (1 .. 100) {  # the holder removes it when done: lock the file still at the path
    sysopen($lock, $path, O_RDWR | O_CREAT | O_NOFOLLOW, 0600) or return 0;
    flock($lock, LOCK_EX) or return 0;
    my @l = stat($lock); my @p = lstat($path);
    if (@p && $p[0] == $l[0] && $p[1] == $l[1]) { $lockpath = $path; return 1; }
    close($lock);
  }
  return 0;
}
if ($rfd >= 0) {
  if (!take_lock()) { print STDERR "cannot replay safely here: no lock of ours (in "
    . "/run/inosync.replay, or ~/.inosync-replay for a user but root): $!\n"; exit 3; }
  if (!trusted($rfd)) { $why = " (untrusted: the node's directory may be changed by "
    . "another user)"; $rfd = -1; }
}
sub names_ok { my $p = shift; return 0 if $p eq '' || $p =~ m{^/};
  for (split m{/}, $p, -1) { return 0 if $_ eq '' || $_ eq '.' || $_ eq '..'; } 1 }
sub under { my ($p, $t) = @_; $p eq $t || index($p, "$t/") == 0 }
sub tainted { my $p = shift; for (@taint) { return 1 if under($p, $_) } 0 }
sub parent {  # (fd of the trusted directory holding $rel, its last name), or ()
  my ($rel, $make) = @_; my @c = split m{/}, $rel; my $name = pop @c;
  my $fd = opn($rfd, '.', $PATH | O_DIRECTORY);
  for my $c (@c) {
    my $next = opn($fd, $c, $PATH | O_DIRECTORY | O_NOFOLLOW);
    if ($next < 0 && $make && $!{ENOENT} && syscall($MKDIRAT, $fd + 0, "$c", 0700) == 0) {
      $next = opn($fd, $c, $PATH | O_DIRECTORY | O_NOFOLLOW); }
    cls($fd); return () if $next < 0;
    $fd = $next; if (!trusted($fd)) { cls($fd); return (); }
  }
  return ($fd, $name);
}
sub is_dir { my $t = opn($_[0], $_[1], $PATH | O_DIRECTORY | O_NOFOLLOW); cls($t); $t >= 0 }
sub movable { my $t = opn($_[0], $_[1], $PATH | O_NOFOLLOW); my $ok = $t >= 0 && trusted($t);
  cls($t); $ok }
sub replay {
  my ($kind, $old, $new) = @_;
  return 0 if $rfd < 0 || $kind eq '-' || !names_ok($old) || !names_ok($new)
    || tainted($old) || under($new, $old);
  my ($ofd, $oname) = parent($old, 0); return 0 unless defined $ofd;
  my $ok = movable($ofd, $oname) && ($kind eq 'd') == is_dir($ofd, $oname);
  my ($nfd, $nname) = $ok ? parent($new, $mkparents) : ();
  if (defined $nfd) {
    print(STDOUT ".") or exit 5;  # the daemon gave up on us (connection closed): stop here
    $ok = syscall($RENAME, $ofd + 0, "$oname", $nfd + 0, "$nname", 0) == 0;
    if (!$ok && $!{ENOSYS}) { print STDERR "cannot replay safely here: no renameat2\n"; exit 3; }
    cls($nfd);
  } else { $ok = 0 }
  cls($ofd);
  return $ok;
}
while (@f) {
  my ($kind, $old, $new) = splice(@f, 0, 3);
  if (replay($kind, $old, $new)) {
    $done++;  # what was at new is gone; what was below old is below new now
    @taint = map { under($_, $old) ? $new . substr($_, length $old) : $_ }
             grep { !under($_, $new) } @taint;
  } else { $left++; push @taint, $old, $new; }
}
finish();
"""

_SUMMARY = re.compile(r"renames replayed: (\d+), left to rsync: (\d+)")

# What each rsync option means for the replay is a field of the one allowlist
# (rsyncopts.TABLE: NEUTRAL, OFF, PERMS, NO_PERMS): a neutral one leaves a
# replayed rename equivalent to rsync sending the data (what a rename keeps:
# data, inode, times, owner, mode; what rsync then compares and fixes).
# Anything else turns the replay off: --max-delete (a rename over a
# file deletes it uncounted), --rsync-path (its program may work elsewhere or
# as someone else than the replay), --confine-root (the replay does not check
# it), and every option not on the list (refused at load anyway: --backup,
# --inplace, --iconv, -s/--secluded-args, --link-dest...).


def _replay_meaning(name: str) -> str:
    spelling = allowed(name)
    return spelling.replay if spelling else rsyncopts.OFF


def blocker(rsync_args: Sequence[str]) -> str | None:
    """The first item of rsync_args that turns the replay off, or None."""
    for arg, name, _ in options(rsync_args):
        if _replay_meaning(name) == rsyncopts.OFF:
            return arg
    return None


def sets_perms(rsync_args: Sequence[str]) -> bool:
    """True if rsync sets permissions (inosync passes -a; the last word wins)."""
    perms = True
    for _, name, _ in options(rsync_args):
        meaning = _replay_meaning(name)
        if meaning in (rsyncopts.PERMS, rsyncopts.NO_PERMS):
            perms = meaning == rsyncopts.PERMS
    return perms


def off_because(replay_moves: bool, rsync_args: Sequence[str],
                delete: deletepolicy.Policy = True) -> str | None:
    """Why renames are not replayed on any node (for the start line and --check)."""
    if not replay_moves:
        return "replay_moves = False"
    policy = deletepolicy.replay_off(delete)
    if policy is not None:
        return policy
    arg = blocker(rsync_args)
    if arg is not None:
        return (f"rsync_args has {arg}, not known to leave a replayed rename the same as "
                "sending the data (an in-place update, a deletion limit or another "
                "program at the other end it would bypass)")
    return None


def meaning(dest: str) -> str:
    """Where a node's files are, in words, as rsync and the replay both read it."""
    kind = node_kind(dest)
    if kind is not Kind.SSH:
        return dest
    host, path = ssh_parts(dest)
    tilde = re.match(r"~([^/]*)/*(.*)$", path, re.DOTALL)
    if tilde:
        home = "the home directory of " + (tilde.group(1) or "the login user")
        return f"{tilde.group(2)} in {home}" if tilde.group(2) else home
    if not path.startswith("/"):  # "host:." is the login directory itself ("host:" is refused)
        here = not path or posixpath.normpath(path) == "."
        return "the login directory" if here else f"{path} in the login directory"
    return path


def can_replay(dest: str) -> bool:
    return node_kind(dest) is not Kind.DAEMON


def replay_argv(dest: str, ssh: Sequence[str], perl: str = "perl") -> list[str]:
    """The command that replays renames on dest (reading them from stdin)."""
    if node_kind(dest) is Kind.SSH:
        return [*ssh, ssh_host(dest), f"{perl} -e {shlex.quote(SCRIPT)}"]
    return [perl, "-e", SCRIPT]


def node_root(dest: str) -> str:
    """The node's directory as the replay reads it: for an ssh node, the path
    after the colon, relative to the login directory ("~" and "~user" mean
    what the remote shell makes of them for rsync)."""
    if node_kind(dest) is Kind.SSH:
        root = ssh_parts(dest)[1]
    else:
        root = dest if not dest.startswith("~") else "./" + dest  # rsync takes it literally
    return root.rstrip("/") or ("/" if root.startswith("/") else ".")


def kinds(moves: Sequence[Move], excludes: Excludes,
          kept: Set[str] = frozenset()) -> list[tuple[str, str, str]]:
    """Each rename with how to replay it: "f" a file, "d" a directory, "-" not
    at all (a directory under which an exclude could protect node-local data,
    or a rename at, into, out of or above a kept mount point: the node's copy
    stays where it is, which the kept rule protects)."""
    def kind(m: Move) -> str:
        if touches(m.old, kept) or touches(m.new, kept):
            return "-"
        if not m.is_dir:
            return "f"
        if excludes.may_match_below(m.old) or excludes.may_match_below(m.new):
            return "-"
        return "d"

    return [(kind(m), m.old, m.new) for m in moves]


def replay_input(dest: str, moves: Sequence[Move], excludes: Excludes,
                 make_parents: bool = True, limit: int = 0,
                 kept: Set[str] = frozenset()) -> bytes:
    """stdin of the replay: the node's directory, whether to make parents, its time
    limit in seconds (0: none), then each rename."""
    fields = [VERSION, node_root(dest), "1" if make_parents else "0", str(limit)]
    fields += [f for triple in kinds(moves, excludes, kept) for f in triple]
    return b"".join(os.fsencode(f) + b"\0" for f in fields)


def summary(stderr: str) -> tuple[int, int] | None:
    """(renames replayed, left to rsync) from the script's last line, if it got there."""
    found = _SUMMARY.findall(stderr)
    return (int(found[-1][0]), int(found[-1][1])) if found else None
