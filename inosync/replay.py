"""Replaying renames on a node before its rsync run, so moved data is not sent again.

A batch's renames (old path, new path, in the order they happened) are
replayed on the node by one small program, then the batch's rsync runs as
always, over the old and the new paths: rsync stays the source of truth,
and replay is only a shortcut. Whatever the node holds, the replay touches
nothing but the two paths of each rename (and makes the new path's missing
parent directories), and gives up on a rename quietly when it cannot do it
as asked: the source missing there, a target that is a non-empty directory,
a parent that is not a real directory (a symlink is never followed), a name
with "..". rsync then sends what the replay did not move.

The program is a constant Perl script (perl-base is Essential on Debian, so
every node has it), run as a child of the daemon for local nodes and
through the configured ssh command for ssh nodes. The node's directory and
the names go as NUL-separated data on its stdin, never into a command
line; only the constant script is quoted for the remote shell. rsync://
nodes have no command channel: no replay there.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from .rsync import Kind, node_kind, ssh_parts

# stdin: root NUL (old NUL new NUL)*; stdout: nothing; stderr: one summary line.
SCRIPT = r"""
use strict; use warnings;
local $/ = "\0";
my @f = <STDIN>; chomp @f;
my $root = shift @f;
my ($done, $skipped) = (0, 0);
sub safe { my $p = shift; return 0 if !defined $p || $p eq "" || $p =~ m{^/};
  for my $c (split m{/}, $p, -1) { return 0 if $c eq "" || $c eq "." || $c eq ".."; } 1 }
sub realdir { my @st = lstat(shift); return @st && -d _ && ! -l _; }
sub parents { my ($rel, $make) = @_; my @c = split m{/}, $rel; pop @c;
  my $p = $root; return 0 unless realdir($p);
  for my $c (@c) { $p .= "/$c";
    if ($make && !lstat($p)) { mkdir($p, 0700) or return 0; }
    return 0 unless realdir($p); } 1 }
while (@f >= 2) {
  my ($old, $new) = splice(@f, 0, 2);
  if (safe($old) && safe($new) && parents($old, 0) && lstat("$root/$old")
      && parents($new, 1) && rename("$root/$old", "$root/$new")) { $done++ }
  else { $skipped++ }
}
print STDERR "renames replayed: $done, left to rsync: $skipped\n";
exit 0;
"""


def can_replay(dest: str) -> bool:
    return node_kind(dest) is not Kind.DAEMON


def replay_argv(dest: str, ssh: Sequence[str], perl: str = "perl") -> list[str]:
    """The command that replays renames on dest (reading them from stdin)."""
    if node_kind(dest) is Kind.SSH:
        host, _ = ssh_parts(dest)
        return [*ssh, host, f"{perl} -e {shlex.quote(SCRIPT)}"]
    return [perl, "-e", SCRIPT]


def replay_input(dest: str, moves: Sequence[tuple[str, str]]) -> bytes:
    """stdin of the replay: the node's directory, then each rename's two paths."""
    root = ssh_parts(dest)[1] if node_kind(dest) is Kind.SSH else dest
    root = root.rstrip("/") or ("/" if root.startswith("/") else ".")
    fields = [root] + [p for move in moves for p in move]
    return b"".join(os.fsencode(f) + b"\0" for f in fields)
